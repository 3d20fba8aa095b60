#include "resident.h"

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "keys.h"

namespace fc {
namespace {

template <typename T>
void reserve_with_slack(std::vector<T>& v, size_t n) {
    if (n > v.capacity()) v.reserve(n + n / 8);
}

}  // namespace

ResidentGroup::ResidentGroup(std::shared_ptr<const Schema> schema) : schema_(schema), rows_(schema) {
    index_.assign(16, Slot{0, kEmpty});
}

bool ResidentGroup::key_equals(uint32_t row, const char* key, size_t len) const {
    return key_len_[row] == len && std::memcmp(arena_.data() + key_off_[row], key, len) == 0;
}

size_t ResidentGroup::find_slot_locked(const char* key, size_t len, uint64_t hash) const {
    const size_t mask = index_.size() - 1;
    for (size_t pos = hash & mask;; pos = (pos + 1) & mask) {
        const Slot& s = index_[pos];
        if (s.row == kEmpty) return index_.size();
        if (s.hash == hash && key_equals(s.row, key, len)) return pos;
    }
}

int64_t ResidentGroup::find_locked(const char* key, size_t len, uint64_t hash) const {
    const size_t pos = find_slot_locked(key, len, hash);
    return pos == index_.size() ? -1 : static_cast<int64_t>(index_[pos].row);
}

void ResidentGroup::insert_index_locked(uint64_t hash, uint32_t row) {
    const size_t mask = index_.size() - 1;
    size_t pos = hash & mask;
    while (index_[pos].row != kEmpty) pos = (pos + 1) & mask;
    index_[pos] = Slot{hash, row};
}

// Backward-shift deletion keeps probe chains intact without tombstones.
void ResidentGroup::erase_slot_locked(size_t pos) {
    const size_t mask = index_.size() - 1;
    size_t hole = pos;
    for (size_t next = (hole + 1) & mask; index_[next].row != kEmpty; next = (next + 1) & mask) {
        const size_t home = index_[next].hash & mask;
        // Move `next` into the hole unless its home lies cyclically in (hole, next].
        const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
        if (!stays) {
            index_[hole] = index_[next];
            hole = next;
        }
    }
    index_[hole] = Slot{0, kEmpty};
}

// Keeps the load factor at or below 0.7 for n_keys keys.
void ResidentGroup::reserve_index_locked(size_t n_keys) {
    size_t cap = index_.size();
    while (n_keys * 10 > cap * 7) cap *= 2;
    if (cap == index_.size()) return;
    index_.assign(cap, Slot{0, kEmpty});
    for (uint32_t r = 0; r < key_off_.size(); ++r)
        insert_index_locked(hash_bytes(arena_.data() + key_off_[r], key_len_[r]), r);
}

void ResidentGroup::compact_arena_locked() {
    std::vector<char> fresh;
    fresh.reserve(arena_.size() - arena_garbage_);
    for (size_t r = 0; r < key_off_.size(); ++r) {
        const uint64_t off = fresh.size();
        fresh.insert(fresh.end(), arena_.begin() + key_off_[r], arena_.begin() + key_off_[r] + key_len_[r]);
        key_off_[r] = off;
    }
    arena_.swap(fresh);
    arena_garbage_ = 0;
}

void ResidentGroup::upsert(const std::vector<std::string_view>& keys, const GroupTable& batch) {
    if (batch.schema().fingerprint() != schema_->fingerprint() ||
        batch.schema().n_features() != schema_->n_features())
        throw std::invalid_argument("upsert: the batch's schema (fingerprint " +
                                    std::to_string(batch.schema().fingerprint()) +
                                    ") differs from the group's (" + std::to_string(schema_->fingerprint()) +
                                    "); encode rows with the group's schema");
    if (keys.size() != batch.n_rows())
        throw std::invalid_argument("upsert: got " + std::to_string(keys.size()) + " keys for " +
                                    std::to_string(batch.n_rows()) + " rows; pass one key per row");
    std::vector<uint64_t> hashes(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        if (batch.status(i) != kPresent)
            throw std::invalid_argument("upsert: row " + std::to_string(i) +
                                        " is not a valid v1 row of this group's schema (status " +
                                        std::to_string(batch.status(i)) + "); nothing was applied");
        if (keys[i].empty() || keys[i].size() > 0xFFFFFFFFu)
            throw std::invalid_argument("upsert: key " + std::to_string(i) +
                                        " is empty; build keys with encode_key(tenant, entity_type, id)");
        hashes[i] = hash_bytes(keys[i].data(), keys[i].size());
    }
    std::unique_lock<std::shared_mutex> lock(mu_);
    const size_t n0 = rows_.n_rows();
    if (n0 + keys.size() >= kEmpty) throw std::length_error("upsert: a resident group holds at most 2^32-2 rows");
    reserve_index_locked(n0 + keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        const size_t pos = find_slot_locked(keys[i].data(), keys[i].size(), hashes[i]);
        if (pos != index_.size()) {
            rows_.copy_row(index_[pos].row, batch, i);
            continue;
        }
        const uint32_t r = static_cast<uint32_t>(rows_.n_rows());
        rows_.resize(r + 1);
        rows_.copy_row(r, batch, i);
        reserve_with_slack(key_off_, r + 1);
        reserve_with_slack(key_len_, r + 1);
        reserve_with_slack(arena_, arena_.size() + keys[i].size());
        key_off_.push_back(arena_.size());
        key_len_.push_back(static_cast<uint32_t>(keys[i].size()));
        arena_.insert(arena_.end(), keys[i].begin(), keys[i].end());
        insert_index_locked(hashes[i], r);
    }
}

size_t ResidentGroup::remove(const std::vector<std::string_view>& keys) {
    std::vector<uint64_t> hashes(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) hashes[i] = hash_bytes(keys[i].data(), keys[i].size());
    std::unique_lock<std::shared_mutex> lock(mu_);
    size_t removed = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        const size_t pos = find_slot_locked(keys[i].data(), keys[i].size(), hashes[i]);
        if (pos == index_.size()) continue;
        const uint32_t r = index_[pos].row;
        erase_slot_locked(pos);
        arena_garbage_ += key_len_[r];
        const uint32_t last = static_cast<uint32_t>(rows_.n_rows() - 1);
        if (r != last) {
            // Point the last row's index slot at r, then move its data there.
            const char* lk = arena_.data() + key_off_[last];
            const size_t lpos = find_slot_locked(lk, key_len_[last], hash_bytes(lk, key_len_[last]));
            index_[lpos].row = r;
            rows_.copy_row(r, rows_, last);
            key_off_[r] = key_off_[last];
            key_len_[r] = key_len_[last];
        }
        rows_.resize(last);
        key_off_.pop_back();
        key_len_.pop_back();
        ++removed;
    }
    if (arena_garbage_ > 4096 && arena_garbage_ * 2 > arena_.size()) compact_arena_locked();
    return removed;
}

void ResidentGroup::lookup(const std::vector<std::string_view>& keys, int64_t* out) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i)
        out[i] = find_locked(keys[i].data(), keys[i].size(), hash_bytes(keys[i].data(), keys[i].size()));
}

GroupTable ResidentGroup::get(const std::vector<std::string_view>& keys) const {
    GroupTable out(schema_, keys.size());
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
        const int64_t r = find_locked(keys[i].data(), keys[i].size(), hash_bytes(keys[i].data(), keys[i].size()));
        if (r >= 0) out.copy_row(i, rows_, static_cast<size_t>(r));
    }
    return out;
}

void ResidentGroup::clear() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    rows_ = GroupTable(schema_);
    std::vector<char>().swap(arena_);
    std::vector<uint64_t>().swap(key_off_);
    std::vector<uint32_t>().swap(key_len_);
    arena_garbage_ = 0;
    index_.assign(16, Slot{0, kEmpty});
    index_.shrink_to_fit();
}

size_t ResidentGroup::size() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return rows_.n_rows();
}

size_t ResidentGroup::nbytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return rows_.nbytes() + arena_.capacity() + key_off_.capacity() * sizeof(uint64_t) +
           key_len_.capacity() * sizeof(uint32_t) + index_.capacity() * sizeof(Slot);
}

size_t ResidentGroup::payload_bytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return rows_.n_rows() * schema_->row_bytes() + (arena_.size() - arena_garbage_);
}

}  // namespace fc
