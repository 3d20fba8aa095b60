// Request resolution: a serving request's ids -> the rows of each group, then the
// assembly kernel (assembler.h). Owns what ids mean natively:
// - an id column is int64 ids or UTF-8 texts; an empty text or a negative int is
//   "no such entity" (served kNotApplicable); an int id's key text is its decimal
//   digits, so 42 and "42" are one id;
// - a pair entity's ids are pair_id(component ids) (keys.h), built here per row, and a
//   component given one id is broadcast to every row (pair_rows);
// - each role's ids are hashed once per request and probed once, in the role's first
//   resident group (its leader); every other resident group of that entity takes its
//   rows from its peer map of the leader's rows (ResidentGroup::peer_rows_locked) when it
//   has a valid one, and probes only the ids the leader lacks; resident groups are
//   probed without building keys (KeyProbe).
// Functions are thread-safe; serve() holds shared locks on the resident groups it
// reads from its probes until its assembly ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "assembler.h"
#include "group_table.h"
#include "resident.h"

namespace fc {

// The ids of one role: int64 ids, or text ids text[offsets[i], offsets[i+1]).
// An empty text id or a negative int id means "no such entity" (kNotApplicable).
struct IdColumn {
    const int64_t* ints = nullptr;
    const char* text = nullptr;
    const uint64_t* offsets = nullptr;
    size_t n = 0;
};

// Where serve reads a group from: a resident group (keys resolved here), a
// table decoded from a direct read (row i = candidate i, or row 0 for a
// per-request role), or neither (privacy disabled: never read).
struct GroupSource {
    const ResidentGroup* resident = nullptr;
    const GroupTable* table = nullptr;
};

// Buffers reused across serve calls on one thread.
struct ServeScratch {
    std::vector<std::vector<int64_t>> refs;
    std::vector<std::string> role_prefix, role_keys;
    std::vector<std::vector<uint64_t>> role_offs, role_hashes;
    std::vector<std::vector<uint8_t>> role_miss;
    std::vector<std::vector<uint8_t>> role_absent;  // role_miss, kEntityNotFound where kPresent
    std::vector<int64_t> iota;
    std::vector<uint8_t> peer_skip;  // follower_rows: ids left to probe
    std::vector<int64_t> peer_out;
    // serve's per-request state (its locks released when it returns).
    std::vector<uint8_t> built;
    std::vector<const ResidentGroup*> residents;
    std::vector<std::shared_lock<std::shared_mutex>> locks;
    std::vector<GroupRows> rows;
    std::vector<int32_t> leader;
};

// Appends id i of `ids` (ints as decimal text) to `out`; false, appending nothing,
// when the id is absent (empty str or negative int: the row has no such entity).
bool append_id(const IdColumn& ids, size_t i, std::string& out);

// Rows of a pair entity whose components have these many ids: each has n or 1 ids (1
// is broadcast to every row); n, or 1 when every component has one. Throws
// std::invalid_argument naming components[c] otherwise.
size_t pair_rows(const std::vector<IdColumn>& components);

// Keys prefix + pair_id(component ids of row i) for each of n_rows rows, into
// keys[offs[i], offs[i+1]); a plain entity is one component (pair_id of one id is the
// id), a pair entity two or more, and a component with one id is broadcast. A row
// with an absent component id gets an empty key and miss[i] = kNotApplicable,
// otherwise kPresent.
void write_keys(std::string_view prefix, const std::vector<IdColumn>& components, size_t n_rows,
                std::string& keys, uint64_t* offs, uint8_t* miss);

// One request: resolves every group's rows (shared locks on resident groups
// held until assembly ends), then assembles. role_ids has one entry per plan
// role (pair roles: ignored, built from components). Throws
// std::invalid_argument for id counts or table sizes that do not fit n.
AssembleStats serve(const AssemblyPlan& plan, std::string_view tenant, const std::vector<IdColumn>& role_ids,
                    const std::vector<GroupSource>& sources, const RequestCols& req, const Outputs& out,
                    ServeScratch& scratch);

}  // namespace fc
