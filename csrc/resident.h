// ResidentGroup: one feature group held in memory for serving.
//
// Rows live in a GroupTable; an open-addressing (linear probing) hash index
// maps key bytes to row numbers. A slot holds a 32-bit fingerprint of the key's
// hash (hash_key, keys.h: int ids hash as integers), the row and, for a long key,
// its arena offset, so a probe reads one slot and compares key bytes only on a
// fingerprint match, and the serving path prefetches a key of any length from the
// slot alone. Short keys are stored in their row's record (next to what the gather
// reads anyway), from the head's 4 owner bytes on: at least 28 bytes, and more where a
// record is padded to whole cache lines (extra_bytes_for); longer keys live in an arena,
// and the record holds their arena offset too. Thread safety: a
// std::shared_mutex guards everything. Readers (lookup, get, and the serving
// path, which holds mutex() shared from key lookup until the gather ends)
// share it; upsert/remove/clear take it exclusively. An upsert batch is
// decoded, validated and hashed before the lock is taken and then applied in
// one critical section, so a reader sees either none or all of a batch and
// never a torn row. Overwriting a key replaces its row in place; removing a
// key moves the last row into the hole, so row numbers are only meaningful
// while the lock is held.
//
// A group may also serve from a mapped generation file (generation.h): the base,
// immutable and shared by every process that maps it, read without copying. Then the
// heap rows and index above are the overlay: every change since the generation. A
// lookup checks the overlay first (skipped while it is empty), then the base; a key
// removed from the base is a tombstone row in the overlay. Rows are numbered base
// first, then the overlay (view_locked() spans both). The base never changes for the
// life of the group: a newer generation is a new ResidentGroup.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "generation.h"
#include "group_table.h"

namespace fc {

// One hash index slot; the same 16 bytes in memory and in a generation file.
struct IndexSlot {
    uint32_t fp;       // hash >> 32 (the low bits pick the home slot)
    uint32_t row;      // 0xFFFFFFFF: a free slot
    uint64_t key_ref;  // the long key's arena offset, ~0 for an inline key
};
static_assert(sizeof(IndexSlot) == 16, "index slots are part of the generation file format");

// A request's ids of one entity, probed without building their keys: key i is
// prefix + text[offs[i], offs[i+1]), and hashes[i] its hash_key (computed from the
// prefix's hash and the id: hash_id_int / hash_id_text).
struct KeyProbe {
    std::string_view prefix;
    const char* text = nullptr;
    const uint64_t* offs = nullptr;
    const uint64_t* hashes = nullptr;
};

// The rows of one group for the rows of another group of the same entity (the
// leader: the group a request probes first), so a request probes an entity's ids once
// for all its groups: rows[r] is this group's row of the key of the leader's row r, or
// kNoRow. Valid while neither group changes: it names both groups' change counts.
// When every row the leader serves is the same row here (groups of one entity written
// together keep one row order), the map is the identity: rows stays empty and a request
// reads no map at all.
struct PeerRows {
    static constexpr uint32_t kNoRow = 0xFFFFFFFFu;
    uint64_t leader_id = 0, leader_changes = 0, own_changes = 0;
    size_t leader_rows = 0;  // rows of the leader the map covers
    bool identity = false;
    std::vector<uint32_t> rows;
};

// A read-only hash index over rows: a ResidentGroup's own (heap) one or a mapped
// generation's. Valid while its memory is neither changed nor freed.
struct IndexView {
    // A record's key bytes start at kKeyAt: the 4 head bytes GroupTable leaves to its
    // owner, then the record's extra bytes; a key of up to inline_key (= 4 + extra) bytes
    // is stored there, a longer one in the arena, its offset in the extra bytes.
    static constexpr size_t kKeyAt = kOwnerBytesAt;
    const IndexSlot* slots = nullptr;
    size_t mask = 0;  // slots - 1
    TableView rows;   // tag = key length
    size_t inline_key = 0;
    const char* arena = nullptr;

    std::string_view key_of(uint32_t row) const;
    size_t find_slot(const char* key, size_t len, uint64_t hash) const;  // mask + 1 if absent
    int64_t find(const char* key, size_t len, uint64_t hash) const;     // row or -1
    // out[i] = row of key i or -1 (also when skip[i] != 0). Software-pipelined: the
    // index slots of later keys, then their records and long keys, are prefetched
    // while earlier ones are compared.
    void find_many(const KeyProbe& keys, const uint8_t* skip, size_t n, int64_t* out) const;
};

class ResidentGroup {
  public:
    static constexpr size_t kMaxKey = 0xFFFF;
    // Extra bytes of a record of this schema (inline key room: these + 4): at least
    // kMinExtra; a record of more than a cache line is padded to whole
    // lines when that adds at most a sixth to it (a row then spans no more lines than it
    // must, and its head and key share the first line), and the padding holds longer keys
    // inline, so their compare reads no arena line (UUIDs under a short prefix).
    // A sixth: W1's 32-float rows (168 -> 192 bytes) and wider are padded; 16-float rows
    // (104 -> 128) are not, keeping them within 1.3x their raw payload plus index.
    static constexpr size_t kMinExtra = 24;
    static size_t extra_bytes_for(const RowLayout& schema);

    explicit ResidentGroup(std::shared_ptr<const RowLayout> schema);
    // A group serving from a mapped generation (an empty overlay); throws
    // GenerationError if the file's record layout is not this schema's.
    ResidentGroup(std::shared_ptr<const RowLayout> schema, std::shared_ptr<const Generation> base);
    ResidentGroup(const ResidentGroup&) = delete;
    ResidentGroup& operator=(const ResidentGroup&) = delete;

    const RowLayout& schema() const { return *schema_; }
    const std::shared_ptr<const RowLayout>& schema_ptr() const { return schema_; }

    // keys[i] -> row i of batch (same schema). Throws std::invalid_argument and
    // applies nothing if a row is not kPresent (kNotComputed is kept, and then
    // served with that reason, when keep_not_computed: a stored row whose bytes fail
    // to decode) or a key is empty or longer than kMaxKey bytes. Later duplicates of
    // a key win. Returns how many kNotComputed rows were kept.
    size_t upsert(const std::vector<std::string_view>& keys, const GroupTable& batch, bool keep_not_computed = false);
    // Same, for rows given as typed columns (see ColumnsIn; every row present). A
    // batch of new, distinct keys (a snapshot load) is written straight into the
    // group's rows, without a temporary table.
    void upsert_columns(const std::vector<std::string_view>& keys, const ColumnsIn& in);
    // Capacity for n_rows rows in total (index and rows), e.g. before loading a
    // group in chunks whose total is known or estimated: the chunks then append
    // without reallocating.
    void reserve(size_t n_rows);
    // Removes the keys that exist; returns how many were removed.
    size_t remove(const std::vector<std::string_view>& keys);
    // out[i] = current row of keys[i] or -1.
    void lookup(const std::vector<std::string_view>& keys, int64_t* out) const;
    // Copies the rows of keys (absent -> kEntityNotFound) into a new table.
    GroupTable get(const std::vector<std::string_view>& keys) const;
    void clear();

    size_t size() const;
    // Bytes held: rows, key arena and the hash index.
    size_t nbytes() const;
    // Bytes of the raw typed payload held: each entry's values at their dtype's
    // width (no timestamps, bitmaps or headers) plus its key.
    size_t payload_bytes() const;
    // Bytes of the hash index.
    size_t index_bytes() const;

    // Writes this group as a generation file at `path` (see generation.h) holding the
    // changes up to changelog `sequence`. Only a heap group (no base) is written.
    void write_generation(const std::string& path, uint64_t sequence) const;
    // The mapped generation, or nullptr for a heap group.
    const std::shared_ptr<const Generation>& generation() const { return gen_; }
    // Rows (live and tombstones) in the overlay of changes since the generation.
    size_t overlay_rows() const;

    using Probe = KeyProbe;

    // Serving path, with mutex() held shared by the caller.
    std::shared_mutex& mutex() const { return mu_; }
    // Row of a key (base rows first, then the overlay's), -1 if absent or removed.
    int64_t find_locked(const char* key, size_t len, uint64_t hash) const;
    // out[i] = row of key i of `keys`, or -1 (also when skip[i] != 0): the overlay is
    // probed first (when it holds anything), then the base, each pipelined.
    void find_many_locked(const Probe& keys, const uint8_t* skip, size_t n, int64_t* out) const;
    TableView view_locked() const;
    // With mutex() of this group and of `leader` held shared: this group's rows for the
    // leader's rows (see PeerRows) when a valid map exists, else nullptr and the caller
    // probes `probed` ids itself. The map is (re)built here once the ids probed without
    // one since either group last changed add up to the leader's row count (so building
    // costs at most what those probes cost: a group that changes all the time never
    // pays for one); a build in progress on another thread is not waited for.
    std::shared_ptr<const PeerRows> peer_rows_locked(const ResidentGroup& leader, size_t probed) const;
    // Rows in the peer map, -1 if there is none (none built yet, or the last one was found
    // stale and dropped): for tests and stats.
    int64_t peer_map_rows() const;

  private:
    static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
    static constexpr uint64_t kInlineRef = ~uint64_t{0};
    // Status of an overlay row that removes its key from the base (never served).
    static constexpr uint8_t kTombstone = 0xFF;
    using Slot = IndexSlot;
    static constexpr Slot kFree{0, kEmpty, kInlineRef};

    IndexView own_view() const;
    // Key of row r in view_locked()'s numbering (base rows first, then the overlay's).
    std::string_view key_at_locked(size_t r) const;
    size_t n_rows_locked() const { return n_base() + rows_.n_rows(); }
    std::shared_ptr<const PeerRows> build_peer_rows_locked(const ResidentGroup& leader) const;
    size_t n_base() const { return gen_ ? gen_->info().n_rows : 0; }
    bool in_base(std::string_view key, uint64_t hash) const {
        return gen_ && base_.find(key.data(), key.size(), hash) >= 0;
    }

    // Hashes of keys; throws std::invalid_argument for an empty or too long key.
    static std::vector<uint64_t> checked_hashes(const std::vector<std::string_view>& keys);
    // Row of each key already present, kEmpty where absent.
    std::vector<uint32_t> find_existing_locked(const std::vector<std::string_view>& keys,
                                               const std::vector<uint64_t>& hashes) const;
    // Applies a batch whose present keys are `found`: overwrite(row, i) for those,
    // then append(src) once for the new rows (new row n0 + j is batch row src[j]).
    template <typename Overwrite, typename Append>
    void apply_locked(const std::vector<std::string_view>& keys, const std::vector<uint64_t>& hashes,
                      const std::vector<uint32_t>& found, Overwrite overwrite, Append append);
    size_t find_slot_locked(const char* key, size_t len, uint64_t hash) const;  // index_.size() if absent
    uint64_t hash_of_row(uint32_t row) const;
    std::string_view key_of(uint32_t row) const;
    // Arena offset of a long key, kept in its record's extra bytes.
    uint64_t arena_offset(uint32_t row) const;
    void set_arena_offset(uint32_t row, uint64_t off);
    void set_key(uint32_t row, std::string_view key);
    void insert_index_locked(uint64_t hash, uint32_t row, uint64_t key_ref);
    // filter_ for index_'s size, empty; mark() / may_hold() a key's hash.
    void reset_filter_locked() { filter_.assign(std::max<size_t>(1, index_.size() / 16), 0); }
    void mark_locked(uint64_t hash) {
        const uint64_t bit = (hash >> 32) & (filter_.size() * 64 - 1);
        filter_[bit / 64] |= uint64_t{1} << (bit % 64);
    }
    bool may_hold_locked(uint64_t hash) const {
        const uint64_t bit = (hash >> 32) & (filter_.size() * 64 - 1);
        return (filter_[bit / 64] >> (bit % 64)) & 1;
    }
    void erase_slot_locked(size_t pos);
    void reserve_index_locked(size_t n_keys);
    void compact_arena_locked();

    std::shared_ptr<const RowLayout> schema_;
    const size_t inline_key_;  // 4 + extra_bytes_for(*schema_): the longest key kept in its record
    mutable std::shared_mutex mu_;
    GroupTable rows_;  // tag = key length, extra = the key when it fits
    std::vector<char> arena_;  // keys longer than inline_key_
    size_t arena_garbage_ = 0;
    size_t key_bytes_ = 0;
    HugeVector<Slot> index_;
    // A one-hash Bloom filter of the keys in index_ (4 bits per slot, so at most ~16%
    // false positives at its load): a request on a mapped group probes the overlay only
    // for ids it may hold, so a busy overlay costs a bit test per id, not a probe.
    // Bits are set as keys are indexed, never cleared but by a resize or clear().
    std::vector<uint64_t> filter_;
    std::shared_ptr<const Generation> gen_;  // the mapped base, or nullptr
    IndexView base_;                          // over gen_'s sections
    const uint64_t id_;     // unique per group object in the process (never reused)
    uint64_t changes_ = 0;  // bumped by every change of which key is which row (under mu_)
    // The peer map and the probes made without a valid one (guarded by peer_mu_).
    mutable std::mutex peer_mu_;
    mutable std::shared_ptr<const PeerRows> peer_;
    mutable PeerRows peer_debt_;  // ids/changes the probes below were made at (rows unused)
    mutable size_t peer_probed_ = 0;
};

}  // namespace fc
