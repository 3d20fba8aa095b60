#include "group_table.h"

#include <algorithm>
#include <limits>
#include <system_error>
#include <thread>

namespace fc {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

GroupTable::GroupTable(std::shared_ptr<const RowLayout> schema, size_t n_rows, size_t extra_bytes)
    : schema_(std::move(schema)),
      extra_bytes_((extra_bytes + 7) / 8 * 8),
      record_bytes_(record_bytes_of(schema_->n_slots(), extra_bytes_)) {
    resize(n_rows);
}

void GroupTable::set_head(size_t r, int64_t generated_at, uint8_t status, uint8_t any_null) {
    uint8_t* rec = record(r);
    std::memcpy(rec, &generated_at, sizeof generated_at);
    rec[8] = status;
    rec[9] = any_null;
}

GroupTable GroupTable::from_columns(std::shared_ptr<const RowLayout> schema, const ColumnsIn& in) {
    GroupTable t(std::move(schema));
    t.append_columns(in);
    return t;
}

void GroupTable::append_columns(const ColumnsIn& in) {
    const size_t n0 = n_rows_;
    reserve(n0 + in.n);
    records_.resize((n0 + in.n) * record_bytes_);  // uninitialized: fill_from_columns writes every byte
    nulls_.resize((n0 + in.n) * schema_->bitmap_bytes(), uint8_t{0});
    n_rows_ = n0 + in.n;
    // A big batch (a snapshot load) is written by two threads: most of its time is
    // the first touch of fresh pages, which the kernel zeroes, and that runs on both.
    constexpr size_t kParallelRows = 1 << 16;
    if (in.n < kParallelRows) {
        fill_from_columns(in, n0, 0, in.n);
        return;
    }
    const size_t half = in.n / 2;
    std::thread other;
    try {
        other = std::thread([&] { fill_from_columns(in, n0, half, in.n); });
    } catch (const std::system_error&) {  // no thread to be had: all rows on this one
        fill_from_columns(in, n0, 0, in.n);
        return;
    }
    fill_from_columns(in, n0, 0, half);
    other.join();
}

void GroupTable::fill_from_columns(const ColumnsIn& in, size_t n0, size_t r0, size_t r1) {
    const RowLayout& s = *schema_;
    const size_t k = s.n_features();
    const size_t nb = s.bitmap_bytes();
    const auto& offs = s.slot_offsets();
    const size_t stride = record_bytes_ / sizeof(float);
    const size_t slots_end = kRecordHeadBytes + extra_bytes_ + 4 * s.n_slots();
    // Blocks of rows, feature by feature within a block: each column is read
    // sequentially while the block's records stay in cache (as encode_rows).
    constexpr size_t kBlock = 256;
    for (size_t b0 = r0; b0 < r1; b0 += kBlock) {
        const size_t b1 = std::min(r1, b0 + kBlock);
        for (size_t r = b0; r < b1; ++r) {  // head, tag and extra bytes, tail padding: zero
            std::memset(record(n0 + r), 0, kRecordHeadBytes + extra_bytes_);
            std::memset(record(n0 + r) + slots_end, 0, record_bytes_ - slots_end);
        }
        for (size_t j = 0; j < k; ++j) column_to_slots(s, in, j, b0, b1, slots(n0 + b0) + offs[j], stride);
        for (size_t r = b0; r < b1; ++r) {
            const size_t row = n0 + r;
            uint8_t any = 0;
            if (in.nulls != nullptr) {
                float* sl = slots(row);
                uint8_t* bits = nulls_.data() + row * nb;
                for (size_t j = 0; j < k; ++j) {
                    const uint8_t null = in.nulls[r * k + j] != 0;
                    bits[j / 8] |= static_cast<uint8_t>(null << (j % 8));
                    any |= null;
                    if (null) std::fill(sl + offs[j], sl + offs[j + 1], kNaN);
                }
            }
            set_head(row, in.generated_at[r], kPresent, any);
        }
    }
}

void GroupTable::decode_into(size_t r, const uint8_t* data, size_t len) {
    const size_t nb = schema_->bitmap_bytes();
    int64_t ts[3];
    uint8_t* bits = nulls_.data() + r * nb;
    const uint8_t st = decode_row(*schema_, data, len, slots(r), bits, ts);
    if (st != kPresent) {
        set_missing(r, st);
        return;
    }
    set_head(r, ts[1], kPresent, std::any_of(bits, bits + nb, [](uint8_t b) { return b != 0; }));
}

void GroupTable::set_missing(size_t r, uint8_t reason) {
    float* s = slots(r);
    std::fill(s, s + schema_->n_slots(), kNaN);
    const size_t nb = schema_->bitmap_bytes();
    std::fill(nulls_.data() + r * nb, nulls_.data() + (r + 1) * nb, uint8_t{0});
    set_head(r, 0, reason, 0);
}

void GroupTable::copy_row(size_t r, const GroupTable& src, size_t src_r) {
    const size_t nb = schema_->bitmap_bytes();
    const uint8_t* from = src.records_.data() + src_r * src.record_bytes_;
    if (extra_bytes_ == src.extra_bytes_) {
        std::memcpy(record(r), from, record_bytes_);
    } else {  // generated_at, status, any_null and slots; tag and extra are the owner's
        std::memcpy(record(r), from, 10);
        std::memcpy(slots(r), from + kRecordHeadBytes + src.extra_bytes_, 4 * schema_->n_slots());
    }
    if (nb > 0) std::memcpy(nulls_.data() + r * nb, src.nulls_.data() + src_r * nb, nb);  // (none without features)
}

void GroupTable::copy_row(size_t r, const TableView& src, size_t src_r) {
    std::memcpy(record(r), src.record(src_r), 10);
    std::memcpy(slots(r), src.slots(src_r), 4 * schema_->n_slots());
    const size_t nb = schema_->bitmap_bytes();
    if (nb == 0) return;
    if (src.any_null(src_r))
        std::memcpy(nulls_.data() + r * nb, src.nulls_of(src_r), nb);
    else  // (a view may hold no bitmaps for rows without nulls)
        std::fill(nulls_.data() + r * nb, nulls_.data() + (r + 1) * nb, uint8_t{0});
}

void GroupTable::reserve(size_t n) {
    const size_t have = records_.capacity() / record_bytes_;
    if (n <= have) return;
    const size_t cap = std::max(n, have + have / 8);
    records_.reserve(cap * record_bytes_);
    nulls_.reserve(cap * schema_->bitmap_bytes());
}

void GroupTable::set_n_rows(size_t n) {
    reserve(n);
    records_.resize(n * record_bytes_, uint8_t{0});
    nulls_.resize(n * schema_->bitmap_bytes(), uint8_t{0});
    n_rows_ = n;
}

void GroupTable::resize(size_t n) {
    const size_t old = n_rows_;
    set_n_rows(n);
    for (size_t r = old; r < n; ++r) set_missing(r, kEntityNotFound);
}

void GroupTable::append_rows(const GroupTable& src, const uint32_t* src_rows, size_t n) {
    const size_t r0 = n_rows_;
    set_n_rows(r0 + n);
    for (size_t i = 0; i < n; ++i) copy_row(r0 + i, src, src_rows[i]);
}

TableView GroupTable::view() const {
    TableView v;
    v.records = records_.data();
    v.record_bytes = record_bytes_;
    v.span = record_bytes_;
    v.slots_offset = kRecordHeadBytes + extra_bytes_;
    v.nulls = nulls_.data();
    v.null_bytes = schema_->bitmap_bytes();
    v.n_slots = schema_->n_slots();
    return v;
}

size_t GroupTable::nbytes() const {
    return records_.capacity() + nulls_.capacity();
}

}  // namespace fc
