// ResidentGroup: one feature group held in memory for serving.
//
// Rows live in a GroupTable; an open-addressing (linear probing) hash index
// maps key bytes to row numbers. Keys of up to kInlineKey bytes are stored in
// their row's record (so a lookup touches the index slot and the row it then
// gathers anyway); longer keys live in an arena. Thread safety: a
// std::shared_mutex guards everything. Readers (lookup, get, and the serving
// path, which holds mutex() shared from key lookup until the gather ends)
// share it; upsert/remove/clear take it exclusively. An upsert batch is
// decoded, validated and hashed before the lock is taken and then applied in
// one critical section, so a reader sees either none or all of a batch and
// never a torn row. Overwriting a key replaces its row in place; removing a
// key moves the last row into the hole, so row numbers are only meaningful
// while the lock is held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string_view>
#include <vector>

#include "group_table.h"

namespace fc {

class ResidentGroup {
  public:
    static constexpr size_t kInlineKey = 24;
    static constexpr size_t kMaxKey = 0xFFFF;

    explicit ResidentGroup(std::shared_ptr<const Schema> schema);
    ResidentGroup(const ResidentGroup&) = delete;
    ResidentGroup& operator=(const ResidentGroup&) = delete;

    const Schema& schema() const { return *schema_; }
    const std::shared_ptr<const Schema>& schema_ptr() const { return schema_; }

    // keys[i] -> row i of batch (same schema). Throws std::invalid_argument and
    // applies nothing if a row is not kPresent or a key is empty or longer than
    // kMaxKey bytes. Later duplicates of a key win.
    void upsert(const std::vector<std::string_view>& keys, const GroupTable& batch);
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
    // Bytes held: rows, key arena, key offsets and the hash index.
    size_t nbytes() const;
    // Bytes of the raw data held: encoded row length + key length per entry.
    size_t payload_bytes() const;

    // Serving path, with mutex() held shared by the caller.
    std::shared_mutex& mutex() const { return mu_; }
    int64_t find_locked(const char* key, size_t len, uint64_t hash) const;
    // out[i] = row of key i = keys[offs[i], offs[i+1]) with hash hashes[i], or -1
    // (also when skip[i] != 0). Software-pipelined: the index slots and rows of
    // later keys are prefetched while earlier ones are compared.
    void find_many_locked(const char* keys, const uint64_t* offs, const uint64_t* hashes, const uint8_t* skip,
                          size_t n, int64_t* out) const;
    TableView view_locked() const { return rows_.view(); }

  private:
    static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
    struct Slot {
        uint64_t hash;
        uint32_t row;
    };

    size_t find_slot_locked(const char* key, size_t len, uint64_t hash) const;  // index_.size() if absent
    std::string_view key_of(uint32_t row) const;
    void set_key(uint32_t row, std::string_view key);
    void insert_index_locked(uint64_t hash, uint32_t row);
    void erase_slot_locked(size_t pos);
    void reserve_index_locked(size_t n_keys);
    void compact_arena_locked();

    std::shared_ptr<const Schema> schema_;
    mutable std::shared_mutex mu_;
    GroupTable rows_;  // tag = key length, extra = the key when it fits
    std::vector<char> arena_;  // keys longer than kInlineKey
    size_t arena_garbage_ = 0;
    size_t key_bytes_ = 0;
    std::vector<uint64_t> key_off_;  // arena offset of a long key
    HugeVector<Slot> index_;
};

}  // namespace fc
