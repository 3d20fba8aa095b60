// GroupTable: the rows of one feature group as float32 slots.
//
// Row r holds n_slots float32 values (every dtype converted: float64/int64
// cast, bool 0/1, categorical code, embedding dim slots; null cells NaN), a
// null byte per feature, an any-null flag, its three timestamps (us) and a
// status: kPresent for a decoded row, otherwise the reason it has no values
// (kEntityNotFound for an absent row, kNotComputed for undecodable bytes, or
// whatever a reader sets, e.g. kTimeout).
//
// A GroupTable is a plain value type: not synchronized. Readers of a table
// that nobody mutates may share it freely (GroupTables handed to Python are
// immutable); ResidentGroup guards its own table with a shared_mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "codec.h"

namespace fc {

// Raw read-only view of table rows, as the assembler consumes them. Valid
// while the table is neither mutated nor destroyed.
struct TableView {
    const float* slots = nullptr;
    const uint8_t* nulls = nullptr;
    const uint8_t* any_null = nullptr;
    const uint8_t* status = nullptr;
    const int64_t* generated_at = nullptr;
    size_t n_rows = 0;
    size_t n_slots = 0;
    size_t n_features = 0;
};

class GroupTable {
  public:
    // n_rows rows, all with status kEntityNotFound.
    explicit GroupTable(std::shared_ptr<const Schema> schema, size_t n_rows = 0);

    // Builds rows from typed columns (see ColumnsIn); every row is present.
    static GroupTable from_columns(std::shared_ptr<const Schema> schema, const ColumnsIn& in);

    const Schema& schema() const { return *schema_; }
    const std::shared_ptr<const Schema>& schema_ptr() const { return schema_; }
    size_t n_rows() const { return n_rows_; }

    // Decodes bytes into row r (status kPresent or kNotComputed).
    void decode_into(size_t r, const uint8_t* data, size_t len);
    // Marks row r as having no values for `reason` (slots NaN).
    void set_missing(size_t r, uint8_t reason);
    // Copies row src_r of src (same schema) over row r.
    void copy_row(size_t r, const GroupTable& src, size_t src_r);
    // Grows or shrinks to n rows; new rows are kEntityNotFound. Growth keeps
    // 1/8 slack so appends amortize without doubling the memory.
    void resize(size_t n);
    void shrink_to_fit();

    const float* slots(size_t r) const { return slots_.data() + r * schema_->n_slots(); }
    const uint8_t* nulls(size_t r) const { return nulls_.data() + r * schema_->n_features(); }
    uint8_t status(size_t r) const { return status_[r]; }
    int64_t feature_ts(size_t r) const { return feature_ts_[r]; }
    int64_t generated_at(size_t r) const { return generated_at_[r]; }
    int64_t published_at(size_t r) const { return published_at_[r]; }
    const std::vector<float>& slot_data() const { return slots_; }
    const std::vector<uint8_t>& null_data() const { return nulls_; }
    const std::vector<uint8_t>& status_data() const { return status_; }
    const std::vector<int64_t>& feature_ts_data() const { return feature_ts_; }
    const std::vector<int64_t>& generated_at_data() const { return generated_at_; }
    const std::vector<int64_t>& published_at_data() const { return published_at_; }

    TableView view() const;
    // Bytes held (capacity of every buffer).
    size_t nbytes() const;

  private:
    std::shared_ptr<const Schema> schema_;
    size_t n_rows_ = 0;
    std::vector<float> slots_;
    std::vector<uint8_t> nulls_;
    std::vector<uint8_t> any_null_;
    std::vector<uint8_t> status_;
    std::vector<int64_t> feature_ts_;
    std::vector<int64_t> generated_at_;
    std::vector<int64_t> published_at_;
};

}  // namespace fc
