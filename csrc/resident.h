// ResidentGroup: one feature group held in memory for serving.
//
// Rows live in a GroupTable; an open-addressing (linear probing) hash index
// maps key bytes to row numbers. A slot (8 bytes) holds a 32-bit fingerprint of the
// key's hash (hash_key, keys.h: int ids hash as integers) and the row, so a probe reads
// one slot and compares a key only on a fingerprint match.
//
// Keys are stored in their row's record, next to what the gather reads anyway (KeyForm):
// a group has one key prefix (format byte, tenant, entity type: that of the first key it
// was given), and a key with that prefix is stored as its id alone: an id that is the
// canonical decimal of a non-negative int64 as that int64 (8 bytes, compared as an
// integer: 13-digit ids cost 8 bytes and no formatting), another id as its bytes. Keys of
// another prefix (another tenant) are stored whole. Id or key bytes are inline in the
// record up to inline_key (3 + extra bytes: at least 11, more where a record is padded to
// whole cache lines, extra_bytes_for), longer ones live in an arena and the record holds
// their arena offset (the serving path reads it from the record line it prefetched for
// the compare, then prefetches the key). Thread safety: a
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

// One hash index slot; the same 8 bytes in memory and in a generation file.
struct IndexSlot {
    uint32_t fp;   // hash >> 32 (the low bits pick the home slot)
    uint32_t row;  // 0xFFFFFFFF: a free slot
};
static_assert(sizeof(IndexSlot) == kIndexSlotBytes, "index slots are part of the generation file format");

// A request's ids of one entity, probed without building their keys: key i is
// prefix + text[offs[i], offs[i+1]), or, when ints is set, prefix + the decimal of
// ints[i] (every probed one >= 0); hashes[i] is its hash_key (computed from the prefix's
// hash and the id: hash_id_int / hash_id_text). An empty prefix: the texts are whole keys.
struct KeyProbe {
    std::string_view prefix;
    const char* text = nullptr;
    const uint64_t* offs = nullptr;
    const int64_t* ints = nullptr;
    const uint64_t* hashes = nullptr;
};

// How a key is stored in its record, relative to the group's key prefix: the form is a
// function of the key's bytes, so two keys are equal exactly when their forms are.
struct KeyForm {
    static constexpr uint8_t kWhole = 0;  // text: the whole key (another prefix, or none)
    static constexpr uint8_t kText = 1;   // text: the id after the group's prefix
    static constexpr uint8_t kInt = 2;    // v: the id after the group's prefix, a canonical int64 decimal
    uint8_t kind = kWhole;
    int64_t v = 0;
    std::string_view text;
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
    // This group holds exactly the leader's keys (both serve parts of one generation with
    // no change since): an id the leader lacks is absent here too, and is not probed.
    bool same_keys = false;
    std::vector<uint32_t> rows;
};

// A read-only hash index over rows: a ResidentGroup's own (heap) one or a mapped
// generation's. Valid while its memory is neither changed nor freed.
struct IndexView {
    // A record's key: the KeyForm kind in the first of the 4 head bytes GroupTable leaves
    // to its owner (kKindAt), the tag = the length of the stored text (0 for kInt); an int
    // id at kIntAt (the extra bytes); text of up to inline_key (= 3 + extra) bytes from
    // kTextAt, a longer one in the arena, its offset at kIntAt.
    static constexpr size_t kKindAt = kOwnerBytesAt;
    static constexpr size_t kTextAt = kOwnerBytesAt + 1;
    static constexpr size_t kIntAt = kRecordHeadBytes;
    const IndexSlot* slots = nullptr;
    size_t mask = 0;  // slots - 1
    TableView rows;   // tag = stored key length
    size_t inline_key = 0;
    const char* arena = nullptr;
    size_t arena_bytes = 0;
    std::string_view prefix;   // the group's key prefix (empty: every key stored whole)
    uint64_t prefix_hash = 0;  // hash_bytes(prefix)

    // The form key (whole key bytes) is stored in.
    KeyForm form_of(const char* key, size_t len) const;
    KeyForm stored(uint32_t row) const;
    // Appends row's whole key to out.
    void append_key(uint32_t row, std::string& out) const;
    uint64_t hash_of(uint32_t row) const;  // hash_key of row's key
    size_t find_slot(const KeyForm& key, uint64_t hash) const;  // mask + 1 if absent
    size_t find_slot(const char* key, size_t len, uint64_t hash) const { return find_slot(form_of(key, len), hash); }
    int64_t find(const char* key, size_t len, uint64_t hash) const;  // row or -1
    // out[i] = row of key i or -1 (also when skip[i] != 0). Software-pipelined: the
    // index slots of later keys, then their records, then their long keys (whose arena
    // offset is in the record) are prefetched while earlier ones are compared.
    void find_many(const KeyProbe& keys, const uint8_t* skip, size_t n, int64_t* out) const;
};

class ResidentGroup {
  public:
    static constexpr size_t kMaxKey = 0xFFFF;
    // Extra bytes of a record of this schema for a group whose ids are like its first one,
    // stored as id_bytes of text (0: an int id) (inline key room: these + 3): at least
    // kMinExtra (an int id or an arena offset). A record of more than a cache line is
    // padded to whole lines
    // - when it has two or three lines and the padding adds at most a third: the row then
    //   spans no more lines than it must (an unaligned 152-byte row straddles a fourth
    //   line a quarter of the time), and W1's 32-float rows (152 -> 192 bytes) hold a
    //   36-byte UUID inline (measured: UUID W1 serving 1.17x the floor unpadded, 0.97x
    //   padded; int ids 0.80x / 0.79x);
    // - or when the padding holds such ids inline, which costs no more than keeping them
    //   in the arena (a 1M x 64-float group of UUIDs: 320-byte rows serve 800 ids at 2.5x
    //   the gather floor, 280-byte rows plus arena keys at 3.5x, in the same memory).
    // Otherwise wider records are not padded: a 1M x 64-float group of int ids keeps
    // 280-byte rows, not 320 (1.16x its float32 values with the index; serving 1.66x the
    // gather floor either way).
    static constexpr size_t kMinExtra = 8;
    static size_t extra_bytes_for(const RowLayout& schema, size_t id_bytes);
    // The extra bytes (>= kMinExtra) of a record whose other bytes and kMinExtra make
    // `record` bytes, by the rule above.
    static size_t padded_extra(size_t record, size_t id_bytes);

    explicit ResidentGroup(std::shared_ptr<const RowLayout> schema);
    // A group serving part `part` of a mapped generation (an empty overlay); throws
    // GenerationError if that part's record layout is not this schema's.
    ResidentGroup(std::shared_ptr<const RowLayout> schema, std::shared_ptr<const Generation> base, size_t part = 0);
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
    // Shrinks the hash index (and its filter) to the keys it holds, after a reserve()
    // that overestimated: RocksDB's row estimate also counts overwritten keys that no
    // compaction has dropped yet, and a generation written from this group copies its index.
    void fit_index();
    // Removes the keys that exist; returns how many were removed.
    size_t remove(const std::vector<std::string_view>& keys);
    // out[i] = current row of keys[i] or -1.
    void lookup(const std::vector<std::string_view>& keys, int64_t* out) const;
    // Copies the rows of keys (absent -> kEntityNotFound) into a new table.
    GroupTable get(const std::vector<std::string_view>& keys) const;
    void clear();

    size_t size() const;
    // Bytes held: rows, key arena and the hash index (of a generation several groups
    // share, this group's part's share).
    size_t nbytes() const;
    // Bytes of the raw typed payload held: each entry's values at their dtype's
    // width (no timestamps, bitmaps or headers) plus its key.
    size_t payload_bytes() const;
    // Bytes of the hash index.
    size_t index_bytes() const;

    // Writes this group as a generation file at `path` (see generation.h) holding the
    // changes up to changelog `sequence`. Only a heap group (no base) is written.
    void write_generation(const std::string& path, uint64_t sequence) const;
    // Writes groups of one entity holding the same keys (heap groups, at least one) as one
    // generation file whose record holds each group's part of an entity side by side
    // (groups[k] is part k; rows in groups[0]'s order, its index and keys), so a request
    // reading all of them reads one record. Records are padded to whole cache lines when
    // that adds at most a third, the padding holding the keys (and one more line when that
    // holds ids like the first inline: W1's two 32-float groups of UUIDs, 384 bytes). Throws std::invalid_argument if a group serves a generation or the groups
    // hold different keys.
    static void write_generation(const std::string& path, const std::vector<const ResidentGroup*>& groups,
                                 uint64_t sequence);
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
    static constexpr size_t kInitialIndexSlots = 16;  // a new (or cleared) group's index
    // Status of an overlay row that removes its key from the base (never served).
    static constexpr uint8_t kTombstone = 0xFF;
    using Slot = IndexSlot;
    static constexpr Slot kFree{0, kEmpty};

    IndexView own_view() const;
    // This group's share of bytes its mapped generation's parts share (the file, its index,
    // its keys): its part's share of a record (all of them for a one-group file).
    size_t shared_share(size_t bytes) const;
    // Appends the key of row r in view_locked()'s numbering (base rows first, then the
    // overlay's) to out.
    void append_key_at_locked(size_t r, std::string& out) const;
    size_t n_rows_locked() const { return n_base() + rows_.n_rows(); }
    std::shared_ptr<const PeerRows> build_peer_rows_locked(const ResidentGroup& leader) const;
    size_t n_base() const { return gen_ ? gen_->info().n_rows : 0; }
    bool in_base(std::string_view key, uint64_t hash) const {
        return gen_ && base_.find(key.data(), key.size(), hash) >= 0;
    }
    // Whether overlay row r's key is a base key.
    bool in_base(uint32_t r) const {
        return gen_ && base_.find_slot(own_view().stored(r), hash_of_row(r)) != base_.mask + 1;
    }
    // Arena bytes of row r's key (0 when inline).
    size_t arena_bytes_of(uint32_t row) const {
        const size_t len = rows_.tag(row);
        return len > inline_key_ ? len : 0;
    }
    // Makes prefix_ the key prefix of key (or none if it is not a well-formed key) and
    // lays records out for ids like key's (extra_bytes_for); only while the group holds
    // no row and serves no generation.
    void set_first_key_locked(std::string_view key);
    // rows_ empty, with extra_bytes per record (capacity kept).
    void relayout_locked(size_t extra_bytes);

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
    // Arena offset of a long key, kept in its record's extra bytes.
    uint64_t arena_offset(uint32_t row) const;
    void set_arena_offset(uint32_t row, uint64_t off);
    void set_key(uint32_t row, std::string_view key);
    void insert_index_locked(uint64_t hash, uint32_t row);
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
    void rebuild_index_locked(size_t slots);
    void compact_arena_locked();

    std::shared_ptr<const RowLayout> schema_;
    size_t inline_key_;  // 3 + rows_.extra_bytes(): the longest key text kept in its record
    std::string prefix_;       // the key prefix of short keys (IndexView::prefix), base and overlay alike
    uint64_t prefix_hash_ = 0;
    mutable std::shared_mutex mu_;
    GroupTable rows_;  // tag and owner/extra bytes: the key (IndexView)
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
    IndexView base_;                          // over gen_'s sections (rows: the keys, in part 0)
    TableView part_rows_;                     // this group's part of gen_'s records
    const uint64_t id_;     // unique per group object in the process (never reused)
    uint64_t changes_ = 0;  // bumped by every change of which key is which row (under mu_)
    // The peer map and the probes made without a valid one (guarded by peer_mu_).
    mutable std::mutex peer_mu_;
    mutable std::shared_ptr<const PeerRows> peer_;
    mutable PeerRows peer_debt_;  // ids/changes the probes below were made at (rows unused)
    mutable size_t peer_probed_ = 0;
};

}  // namespace fc
