#include "group_table.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace fc {
namespace {

template <typename T>
void resize_with_slack(std::vector<T>& v, size_t n, T fill) {
    if (n > v.capacity()) v.reserve(n + n / 8);
    v.resize(n, fill);
}

}  // namespace

GroupTable::GroupTable(std::shared_ptr<const Schema> schema, size_t n_rows) : schema_(std::move(schema)) {
    slots_.reserve(n_rows * schema_->n_slots());
    nulls_.reserve(n_rows * schema_->n_features());
    for (auto* v : {&any_null_, &status_}) v->reserve(n_rows);
    for (auto* v : {&feature_ts_, &generated_at_, &published_at_}) v->reserve(n_rows);
    resize(n_rows);
}

GroupTable GroupTable::from_columns(std::shared_ptr<const Schema> schema, const ColumnsIn& in) {
    GroupTable t(std::move(schema), in.n);
    const Schema& s = *t.schema_;
    const size_t k = s.n_features();
    const auto& offs = s.slot_offsets();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t r = 0; r < in.n; ++r) {
        float* slots = t.slots_.data() + r * s.n_slots();
        uint8_t any = 0;
        for (size_t j = 0; j < k; ++j) {
            const uint8_t null = in.nulls ? (in.nulls[r * k + j] != 0) : 0;
            t.nulls_[r * k + j] = null;
            any |= null;
            if (null)
                std::fill(slots + offs[j], slots + offs[j + 1], nan);
            else
                column_to_slots(s, in, j, r, slots + offs[j]);
        }
        t.any_null_[r] = any;
        t.status_[r] = kPresent;
        t.feature_ts_[r] = in.feature_ts[r];
        t.generated_at_[r] = in.generated_at[r];
        t.published_at_[r] = in.published_at[r];
    }
    return t;
}

void GroupTable::decode_into(size_t r, const uint8_t* data, size_t len) {
    const size_t k = schema_->n_features();
    int64_t ts[3];
    uint8_t* nulls = nulls_.data() + r * k;
    const uint8_t st = decode_row(*schema_, data, len, slots_.data() + r * schema_->n_slots(), nulls, ts);
    if (st != kPresent) {
        set_missing(r, st);
        return;
    }
    status_[r] = kPresent;
    any_null_[r] = std::any_of(nulls, nulls + k, [](uint8_t b) { return b != 0; });
    feature_ts_[r] = ts[0];
    generated_at_[r] = ts[1];
    published_at_[r] = ts[2];
}

void GroupTable::set_missing(size_t r, uint8_t reason) {
    float* s = slots_.data() + r * schema_->n_slots();
    std::fill(s, s + schema_->n_slots(), std::numeric_limits<float>::quiet_NaN());
    uint8_t* nl = nulls_.data() + r * schema_->n_features();
    std::fill(nl, nl + schema_->n_features(), uint8_t{0});
    any_null_[r] = 0;
    status_[r] = reason;
    feature_ts_[r] = generated_at_[r] = published_at_[r] = 0;
}

void GroupTable::copy_row(size_t r, const GroupTable& src, size_t src_r) {
    const size_t ns = schema_->n_slots(), k = schema_->n_features();
    std::memcpy(slots_.data() + r * ns, src.slots_.data() + src_r * ns, ns * sizeof(float));
    std::memcpy(nulls_.data() + r * k, src.nulls_.data() + src_r * k, k);
    any_null_[r] = src.any_null_[src_r];
    status_[r] = src.status_[src_r];
    feature_ts_[r] = src.feature_ts_[src_r];
    generated_at_[r] = src.generated_at_[src_r];
    published_at_[r] = src.published_at_[src_r];
}

void GroupTable::resize(size_t n) {
    resize_with_slack(slots_, n * schema_->n_slots(), std::numeric_limits<float>::quiet_NaN());
    resize_with_slack(nulls_, n * schema_->n_features(), uint8_t{0});
    resize_with_slack(any_null_, n, uint8_t{0});
    resize_with_slack(status_, n, static_cast<uint8_t>(kEntityNotFound));
    for (auto* v : {&feature_ts_, &generated_at_, &published_at_}) resize_with_slack(*v, n, int64_t{0});
    n_rows_ = n;
}

void GroupTable::shrink_to_fit() {
    slots_.shrink_to_fit();
    nulls_.shrink_to_fit();
    any_null_.shrink_to_fit();
    status_.shrink_to_fit();
    for (auto* v : {&feature_ts_, &generated_at_, &published_at_}) v->shrink_to_fit();
}

TableView GroupTable::view() const {
    TableView v;
    v.slots = slots_.data();
    v.nulls = nulls_.data();
    v.any_null = any_null_.data();
    v.status = status_.data();
    v.generated_at = generated_at_.data();
    v.n_rows = n_rows_;
    v.n_slots = schema_->n_slots();
    v.n_features = schema_->n_features();
    return v;
}

size_t GroupTable::nbytes() const {
    return slots_.capacity() * sizeof(float) + nulls_.capacity() + any_null_.capacity() + status_.capacity() +
           (feature_ts_.capacity() + generated_at_.capacity() + published_at_.capacity()) * sizeof(int64_t);
}

}  // namespace fc
