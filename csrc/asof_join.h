/* AsofJoin: the point-in-time (as-of) search of event rows against one feature
 * group's history, producing row refs into that history.
 *
 * Contract. Construct once per (events, group) with the events' entity keys
 * (int64: raw integer ids or dense codes from a dictionary), their validity and
 * their event times. Then feed the history in one or more chunks with add(), in
 * write order: a chunk's rows get refs ref_offset, ref_offset + 1, ... and a
 * larger ref means a later write. Only a "best so far" per event is kept, so the
 * history never has to be in memory at once. finish() writes, per event, the ref
 * the winning row (or -1) and the reason code (reasons.py):
 *
 *   winner  = max over rows of the same key with eligible(row, event_ts) of
 *             (feature_ts, generated_at, ref)          -- lexicographic
 *   eligible = feature_ts <= event_ts, and in strict mode also generated_at <= event_ts
 *   reason  = present (0) with a winner; not_applicable (2) for an invalid (null) key;
 *             entity_not_found (6) if nothing is eligible. Rows that become eligible
 *             only after the event say nothing about it: what the store knew at the
 *             event time decides, as online after materialize(as_of=event time).
 *
 * finish() also compacts: row_refs index into `winners`, the sorted distinct refs of
 * the chosen rows, so a caller reads only those rows back (each once).
 *
 * Thread safety: none; one caller at a time (the bindings release the GIL but
 * hold the object). add() may use `threads` worker threads internally.
 * Ownership: copies everything it needs; input pointers are not retained.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fc {

class AsofJoin {
public:
    AsofJoin(const int64_t* event_keys, const uint8_t* event_valid, const int64_t* event_ts, size_t n,
             bool strict, int threads);

    /* Merges one history chunk of m rows; returns the number of rows whose key occurs in the events. */
    size_t add(const int64_t* keys, const int64_t* feature_ts, const int64_t* generated_at, size_t m,
               int64_t ref_offset);

    /* Writes row_refs (n, indices into winners or -1) and miss_reason (n); fills winners. */
    void finish(int64_t* row_refs, uint8_t* miss_reason, std::vector<int64_t>& winners);

    size_t n_events() const { return event_code_.size(); }
    size_t n_entities() const { return entity_events_start_.empty() ? 0 : entity_events_start_.size() - 1; }

    // A candidate row (shared with LatestPerKey, which applies the same order).
    struct Best {
        int64_t feature_ts;
        int64_t generated_at;
        int64_t ref;  // -1: none yet
    };
    // True if a beats b: b is empty, or a's (feature_ts, generated_at, ref) is larger.
    static bool wins(const Best& a, const Best& b) {
        if (b.ref < 0) return true;
        if (a.feature_ts != b.feature_ts) return a.feature_ts > b.feature_ts;
        if (a.generated_at != b.generated_at) return a.generated_at > b.generated_at;
        return a.ref > b.ref;
    }

private:
    // A history row as the merge reads it, scattered by entity so reads stay sequential.
    struct Row {
        int64_t avail;  // the earliest event time at which the row is eligible
        int64_t feature_ts;
        int64_t generated_at;
        int64_t ref;
    };

    void merge_entities(size_t first, size_t last, const std::vector<uint32_t>& rows_start, std::vector<Row>& rows);
    size_t insert_keys(const int64_t* keys, const uint8_t* valid, size_t n, size_t capacity, int32_t* codes_out);

    bool strict_;
    int threads_;
    std::vector<int64_t> table_keys_;   // open addressing, capacity a power of two
    std::vector<int32_t> table_codes_;  // -1: empty slot
    std::vector<int32_t> event_code_;   // per event; -1: invalid key
    std::vector<uint32_t> entity_events_start_;  // CSR over entity codes (n_entities + 1)
    std::vector<uint32_t> entity_events_;        // event indices, by code then event time
    std::vector<int64_t> sorted_ts_;             // event time of entity_events_[e]
    std::vector<Best> best_;                     // best row of entity_events_[e]
    // add()'s working memory, kept between chunks.
    std::vector<int32_t> scratch_code_;
    std::vector<uint32_t> scratch_start_, scratch_fill_;
    std::vector<Row> scratch_rows_;
    // finish()'s working memory, kept between calls.
    std::vector<std::pair<int64_t, uint32_t>> scratch_found_, scratch_sorted_;

    int32_t find(int64_t key) const;
};

/* LatestPerKey: the newest eligible row of every key as of ONE time (materialization,
 * snapshot loading): the AsofJoin rule with event_ts = as_of for every key, without
 * knowing the keys up front.
 *
 * Contract. Feed the history with add() in write order (refs as in AsofJoin); only a
 * best-so-far row per key is kept (a hash map over the keys seen), so the history
 * streams. finish() returns the winning refs in ascending order with each one's key;
 * a key without an eligible row is absent. Thread safety: none (one caller at a time).
 */
class LatestPerKey {
public:
    LatestPerKey(int64_t as_of, bool strict) : as_of_(as_of), strict_(strict) {}

    /* Merges one chunk of m rows; returns the number of eligible rows. */
    size_t add(const int64_t* keys, const int64_t* feature_ts, const int64_t* generated_at, size_t m,
               int64_t ref_offset);

    /* Fills refs (ascending) and the key of each. */
    void finish(std::vector<int64_t>& refs, std::vector<int64_t>& keys) const;

    size_t n_keys() const { return best_.size(); }

private:
    struct Entry {
        int64_t key;
        AsofJoin::Best best;
    };
    void grow();

    int64_t as_of_;
    bool strict_;
    std::vector<int32_t> slots_;  // index into entries_, -1: empty; capacity a power of two
    std::vector<Entry> best_;
};

/* The order of int64 ids by the bytes of their decimal text (what key order is for
 * integer ids: "10" < "9", "-1" < "0"), written to order (n). Pure, thread-safe. */
void decimal_text_order(const int64_t* ids, size_t n, int64_t* order);

}  // namespace fc
