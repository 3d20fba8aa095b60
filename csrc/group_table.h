// GroupTable: the rows of one feature group as float32 slots.
//
// Row r holds n_slots float32 values (every dtype converted: float64/int64
// cast, bool 0/1, categorical code, embedding dim slots; null cells NaN), a
// null bit per feature, its generated_at (us; what freshness is measured
// from) and a status: kPresent for a decoded row, otherwise the reason it has
// no values (kEntityNotFound for an absent row, kNotComputed for undecodable
// bytes, or whatever a reader sets, e.g. kTimeout). The row's feature_timestamp
// and published_at are checked by the decoder but not kept: serving reads
// neither (which row is newest is decided when rows are written), and a
// resident group's memory should be its values.
//
// Layout: what serving touches per row sits in one record, so a gather costs
// one or two cache lines per row:
//   i64 generated_at | u8 status | u8 any_null | u16 tag | u32 owner | extra bytes | f32 slots[n_slots]
// `tag`, the 4 `owner` bytes and `extra` (a multiple of 8 bytes) belong to the owner
// (ResidentGroup keeps short keys from the owner bytes on, next to the head; a table
// without an owner leaves them zero); records are record_bytes() apart
// and 8-byte aligned. The null bitmaps (the row format's bit order: feature j
// is bit j % 8 of byte j / 8) live in a side array.
//
// A GroupTable is a plain value type: not synchronized. Readers of a table
// that nobody mutates may share it freely (GroupTables handed to Python are
// immutable); ResidentGroup guards its own table with a shared_mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "codec.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fc {

// Allocator for big, randomly accessed buffers (row records, hash index): from
// 2 MiB up it asks Linux for transparent huge pages, because random gathers
// over tens of MiB otherwise spend more time in TLB misses than in the copy.
template <typename T>
struct HugePageAllocator {
    using value_type = T;
    static constexpr size_t kHuge = size_t{2} << 20;

    HugePageAllocator() = default;
    template <typename U>
    HugePageAllocator(const HugePageAllocator<U>&) {}

    // Default-initialization (no zeroing) for value-less construction, so that
    // resize(n) of a byte vector leaves fresh pages untouched for the writer that
    // fills them (GroupTable::append_columns); construction with a value is as usual.
    template <typename U>
    void construct(U* p) {
        ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }

    T* allocate(size_t n) {
        const size_t bytes = n * sizeof(T);
        if (bytes < kHuge) return static_cast<T*>(::operator new(bytes));
        // posix_memalign, not std::aligned_alloc: the latter is missing before macOS 10.15.
        void* p = nullptr;
        if (posix_memalign(&p, kHuge, (bytes + kHuge - 1) / kHuge * kHuge) != 0) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
        madvise(p, (bytes + kHuge - 1) / kHuge * kHuge, MADV_HUGEPAGE);
#endif
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t n) {
        if (n * sizeof(T) < kHuge)
            ::operator delete(p);
        else
            std::free(p);
    }
    template <typename U>
    bool operator==(const HugePageAllocator<U>&) const {
        return true;
    }
    template <typename U>
    bool operator!=(const HugePageAllocator<U>&) const {
        return false;
    }
};

template <typename T>
using HugeVector = std::vector<T, HugePageAllocator<T>>;

constexpr size_t kRecordHeadBytes = 16;
constexpr size_t kOwnerBytesAt = 12;  // the head's owner bytes, followed by the extra bytes

// Raw read-only view of table rows, as the assembler consumes them. Valid
// while the table is neither mutated nor destroyed.
struct TableView {
    const uint8_t* records = nullptr;
    size_t record_bytes = 0;
    // Bytes of a record this view reads (from record(r) on): record_bytes, or less for
    // one group's part of an entity table's records (generation.h), which the
    // assembler's prefetch covers.
    size_t span = 0;
    size_t slots_offset = kRecordHeadBytes;
    const uint8_t* nulls = nullptr;  // null bitmaps, null_bytes per row; read only for rows with any_null
    size_t null_bytes = 0;
    size_t n_slots = 0;

    // Rows from `split` on are row r - split of a second segment (a resident group's
    // overlay, numbered after the rows of its mapped generation), records record_bytes2
    // apart (the same head, extra bytes and slots: a generation's records may be wider,
    // holding other groups' parts).
    size_t split = SIZE_MAX;
    const uint8_t* records2 = nullptr;
    const uint8_t* nulls2 = nullptr;
    size_t record_bytes2 = 0;

    const uint8_t* record(size_t r) const {
        return r < split ? records + r * record_bytes : records2 + (r - split) * record_bytes2;
    }
    int64_t generated_at(size_t r) const {
        int64_t v;
        std::memcpy(&v, record(r), sizeof v);
        return v;
    }
    uint8_t status(size_t r) const { return record(r)[8]; }
    bool any_null(size_t r) const { return record(r)[9] != 0; }
    const float* slots(size_t r) const { return reinterpret_cast<const float*>(record(r) + slots_offset); }
    const uint8_t* nulls_of(size_t r) const { return r < split ? nulls + r * null_bytes : nulls2 + (r - split) * null_bytes; }
    uint16_t tag(size_t r) const {
        uint16_t t;
        std::memcpy(&t, record(r) + 10, sizeof t);
        return t;
    }
    const uint8_t* extra(size_t r) const { return record(r) + kRecordHeadBytes; }
};

// Bit j of a row's null bitmap.
inline bool is_null(const uint8_t* null_bits, size_t j) { return (null_bits[j / 8] >> (j % 8)) & 1; }

class GroupTable {
  public:
    // n_rows rows, all with status kEntityNotFound; extra_bytes (rounded up to a
    // multiple of 8) per record for the owner.
    explicit GroupTable(std::shared_ptr<const RowLayout> schema, size_t n_rows = 0, size_t extra_bytes = 0);
    // Bytes per record of a table with n_slots float slots and extra_bytes extra bytes.
    static size_t record_bytes_of(size_t n_slots, size_t extra_bytes) {
        return (kRecordHeadBytes + (extra_bytes + 7) / 8 * 8 + 4 * n_slots + 7) / 8 * 8;
    }

    // Builds rows from typed columns (see ColumnsIn); every row is present.
    static GroupTable from_columns(std::shared_ptr<const RowLayout> schema, const ColumnsIn& in);
    // Appends in's rows (typed columns of this schema), every row present. Does not
    // allocate when capacity for them is reserved.
    void append_columns(const ColumnsIn& in);

    const RowLayout& schema() const { return *schema_; }
    const std::shared_ptr<const RowLayout>& schema_ptr() const { return schema_; }
    size_t n_rows() const { return n_rows_; }
    // Rows the records can hold without reallocating.
    size_t capacity() const { return records_.capacity() / record_bytes_; }
    size_t record_bytes() const { return record_bytes_; }
    size_t extra_bytes() const { return extra_bytes_; }

    // Decodes bytes into row r (status kPresent or kNotComputed).
    void decode_into(size_t r, const uint8_t* data, size_t len);
    // Marks row r as having no values for `reason` (slots NaN).
    void set_missing(size_t r, uint8_t reason);
    // Copies row src_r of src (same schema) over row r: values, nulls and
    // generated_at; tag and extra bytes too when both tables have the same extra size.
    void copy_row(size_t r, const GroupTable& src, size_t src_r);
    // Copies row src_r of a view of the same schema over row r (values, nulls, generated_at, status).
    void copy_row(size_t r, const TableView& src, size_t src_r);
    // Capacity for n rows. Growth is at least 1/8 of the current capacity, so
    // chunked appends amortize without doubling the memory; the first
    // reservation of an empty table is exact.
    void reserve(size_t n);
    // Grows or shrinks to n rows; new rows are kEntityNotFound.
    void resize(size_t n);
    // Appends rows src_rows[0..n) of src (same schema) in one pass: no
    // per-row growth and no initialization of rows about to be overwritten.
    void append_rows(const GroupTable& src, const uint32_t* src_rows, size_t n);

    uint8_t status(size_t r) const { return records_[r * record_bytes_ + 8]; }
    uint8_t* extra(size_t r) { return record(r) + kRecordHeadBytes; }
    // The owner's bytes of row r and the extra bytes after them (4 + extra_bytes()).
    uint8_t* owner_bytes(size_t r) { return record(r) + kOwnerBytesAt; }
    const uint8_t* extra(size_t r) const { return records_.data() + r * record_bytes_ + kRecordHeadBytes; }
    uint16_t tag(size_t r) const {
        uint16_t t;
        std::memcpy(&t, records_.data() + r * record_bytes_ + 10, sizeof t);
        return t;
    }
    void set_tag(size_t r, uint16_t tag) { std::memcpy(record(r) + 10, &tag, sizeof tag); }

    const HugeVector<uint8_t>& record_data() const { return records_; }
    // Null bitmaps, schema().bitmap_bytes() per row.
    const std::vector<uint8_t>& null_bits() const { return nulls_; }

    TableView view() const;
    // Bytes held (capacity of every buffer).
    size_t nbytes() const;

  private:
    uint8_t* record(size_t r) { return records_.data() + r * record_bytes_; }
    float* slots(size_t r) { return reinterpret_cast<float*>(record(r) + kRecordHeadBytes + extra_bytes_); }
    void set_head(size_t r, int64_t generated_at, uint8_t status, uint8_t any_null);
    // Sets the row count; new rows are zero bytes until the caller fills them.
    void set_n_rows(size_t n);
    // Writes rows [r0, r1) of in into rows n0 + r0, ... (every byte of their records).
    void fill_from_columns(const ColumnsIn& in, size_t n0, size_t r0, size_t r1);

    std::shared_ptr<const RowLayout> schema_;
    size_t extra_bytes_;
    size_t record_bytes_;
    size_t n_rows_ = 0;
    HugeVector<uint8_t> records_;
    std::vector<uint8_t> nulls_;  // bitmaps
};

}  // namespace fc
