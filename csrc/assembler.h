// The assembly kernel: AssemblyPlan + assemble() turn per-group row references
// into a feature matrix. Pure: it knows rows, not ids or keys, so online serving
// (resolve.h: ids -> rows, then assemble) and the offline join (asof_join.h: events
// -> rows, then assemble) share it, which is what makes their matrices identical.
//
// An AssemblyPlan is built once per feature set version from plain data (Python's
// compile_feature_set) and is immutable afterwards, so any number of threads
// may assemble/serve with one plan concurrently.
//
// For row i and every column the assembler decides a reason (kPresent, the
// group row's miss reason or status, kNoHistory for a null cell, kStale when
// eval_time - generated_at exceeds the group's SLA, kNotComputed for a NaN
// context/candidate value) and writes the stored value or the column's
// default action for that reason:
//   constant             the plan's constant for (column, reason)
//   use_stale_if_available  the stored value for kStale (reason stays kStale);
//                        NaN otherwise (timeouts have no stale row here)
//   null_with_indicator  NaN
//   fail                 NaN, and the first (row, column, reason) is reported
// Indicator columns hold 1.0 when their feature's reason is not kPresent and
// always have reason kPresent. A cross feature takes the reason of its first
// non-present input and then its own column's default; kLookup with a code
// outside the vector is kNotApplicable; cosine with a zero vector is 0.
// group_age_s is (eval_time - generated_at) / 1e6 for present rows, else NaN.
//
// Outputs are written in place; assemble never allocates per row and touches
// no Python object, so callers release the GIL around it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "group_table.h"

namespace fc {

enum CrossKind : uint8_t { kLookup = 0, kDot = 1, kCosine = 2 };

// An entity role of a request: which ids feed the groups of that entity.
// A pair role (components = indices of two or more non-pair roles) builds its
// ids natively with pair_id from its components' ids.
struct RoleSpec {
    std::string entity_type;
    bool per_request = false;
    std::vector<uint32_t> components;
};

// One feature of a group placed in the matrix.
struct FeatureSpec {
    uint32_t feature = 0;        // index in the group's schema
    uint32_t dst_col = 0;        // first matrix column (embeddings take dim columns)
    int32_t indicator_col = -1;  // its missing-indicator column, or -1
};

struct GroupSpec {
    std::shared_ptr<const RowLayout> schema;
    uint32_t role = 0;
    int64_t sla_us = 0;  // <= 0: never stale
    std::vector<FeatureSpec> features;
};

struct CrossSpec {
    uint8_t kind = kLookup;
    uint32_t dst_col = 0;
    uint32_t group_a = 0, feature_a = 0;  // lookup: the vector
    uint32_t group_b = 0, feature_b = 0;  // lookup: the categorical code
};

class AssemblyPlan {
  public:
    // Resolved placement of one feature: slots [src_slot, src_slot + width).
    struct Map {
        uint32_t feature, src_slot, width, dst_col;
        int32_t indicator_col;
    };
    // Maximal runs contiguous in both source slots and matrix columns, copied
    // with one memcpy when a row is complete.
    struct Run {
        uint32_t src_slot, dst_col, width;
    };
    struct Group {
        GroupSpec spec;
        std::vector<Map> maps;
        std::vector<Run> runs;
        std::vector<uint32_t> indicator_cols;
    };
    struct Cross {
        CrossSpec spec;
        uint32_t a_slot, a_width, b_slot, b_width;
    };

    // actions and constants are (n_columns, 8) row-major, indexed by reason.
    // Throws std::invalid_argument unless every column is produced exactly once
    // and every reference is in range.
    AssemblyPlan(size_t n_columns, std::vector<uint8_t> actions, std::vector<float> constants, std::vector<RoleSpec> roles,
         std::vector<GroupSpec> groups, std::vector<uint32_t> context_cols, std::vector<uint32_t> candidate_cols,
         std::vector<CrossSpec> crosses);

    size_t n_columns() const { return n_columns_; }
    const std::vector<uint8_t>& actions() const { return actions_; }
    const std::vector<float>& constants() const { return constants_; }
    const std::vector<RoleSpec>& roles() const { return roles_; }
    const std::vector<Group>& groups() const { return groups_; }
    const std::vector<uint32_t>& context_cols() const { return context_cols_; }
    const std::vector<uint32_t>& candidate_cols() const { return candidate_cols_; }
    const std::vector<Cross>& crosses() const { return crosses_; }

  private:
    size_t n_columns_;
    std::vector<uint8_t> actions_;
    std::vector<float> constants_;
    std::vector<RoleSpec> roles_;
    std::vector<Group> groups_;
    std::vector<uint32_t> context_cols_;
    std::vector<uint32_t> candidate_cols_;
    std::vector<Cross> crosses_;
};

// Rows of one group for assemble: row i reads refs[i * refs_stride] (stride 0
// broadcasts row 0); a ref of -1 means "no row" with reason miss[i * miss_stride].
struct GroupRows {
    TableView table;
    bool disabled = false;  // privacy: never read, every column kPrivacyDisabled
    const int64_t* refs = nullptr;
    size_t refs_stride = 1;
    const uint8_t* miss = nullptr;
    size_t miss_stride = 0;
};

// Per-row request inputs; a stride of 0 broadcasts the first row.
struct RequestCols {
    const int64_t* eval_time = nullptr;
    size_t eval_stride = 1;
    const float* context = nullptr;  // (rows, n_context)
    size_t context_stride = 0;       // floats between rows (0 = broadcast)
    const float* candidate = nullptr;  // (n, n_candidate)
};

struct Outputs {
    size_t n = 0;
    float* values = nullptr;       // (n, n_columns)
    uint8_t* reasons = nullptr;    // (n, n_columns)
    float* group_age = nullptr;    // (n, n_groups)
};

struct AssembleStats {
    uint64_t reason_counts[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // cells per reason
    int64_t fail_row = -1;
    int64_t fail_col = -1;
    uint8_t fail_reason = 0;
    int64_t resolve_ns = 0;   // serve: keys, hashing, lookups
    int64_t assemble_ns = 0;
};

// The steady clock of AssembleStats' timings, in ns.
inline int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Refs must be in range (callers validate); see the header comment. Large
// batches (offline) may be split over up to `threads` threads by rows.
AssembleStats assemble(const AssemblyPlan& plan, const std::vector<GroupRows>& groups, const RequestCols& req,
                       const Outputs& out, int threads = 1);

}  // namespace fc
