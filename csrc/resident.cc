#include "resident.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "keys.h"

namespace fc {
namespace {

// Equality of two byte strings of length len; keys are short, so word loads
// inline beat a memcmp call.
inline bool same_bytes(const char* a, const char* b, size_t len) {
    uint64_t x, y;
    if (len >= 8) {
        for (size_t i = 0; i + 8 <= len; i += 8) {
            std::memcpy(&x, a + i, 8);
            std::memcpy(&y, b + i, 8);
            if (x != y) return false;
        }
        std::memcpy(&x, a + len - 8, 8);  // the tail, overlapping the last word
        std::memcpy(&y, b + len - 8, 8);
        return x == y;
    }
    for (size_t i = 0; i < len; ++i)
        if (a[i] != b[i]) return false;
    return true;
}

inline uint32_t fingerprint(uint64_t hash) { return static_cast<uint32_t>(hash >> 32); }

uint64_t next_group_id() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

template <typename T>
void reserve_with_slack(std::vector<T>& v, size_t n) {
    if (n > v.capacity()) v.reserve(n + n / 8);
}

}  // namespace

KeyForm IndexView::form_of(const char* key, size_t len) const {
    KeyForm f;
    if (!prefix.empty() && len >= prefix.size() && same_bytes(key, prefix.data(), prefix.size())) {
        // (a prefix is self-delimiting: a key that starts with it has it as its prefix)
        const char* id = key + prefix.size();
        const size_t n = len - prefix.size();
        if (parse_int_id(id, n, f.v)) {
            f.kind = KeyForm::kInt;
            return f;
        }
        f.kind = KeyForm::kText;
        f.text = {id, n};
        return f;
    }
    f.text = {key, len};
    return f;
}

KeyForm IndexView::stored(uint32_t row) const {
    const uint8_t* rec = rows.record(row);
    KeyForm f;
    f.kind = rec[kKindAt];
    if (f.kind == KeyForm::kInt) {
        std::memcpy(&f.v, rec + kIntAt, sizeof f.v);
        return f;
    }
    const size_t len = rows.tag(row);
    if (len <= inline_key) {
        f.text = {reinterpret_cast<const char*>(rec + kTextAt), len};
    } else {
        uint64_t off;
        std::memcpy(&off, rec + kIntAt, sizeof off);
        f.text = {arena + off, len};
    }
    return f;
}

void IndexView::append_key(uint32_t row, std::string& out) const {
    const KeyForm f = stored(row);
    if (f.kind != KeyForm::kWhole) out.append(prefix);
    if (f.kind == KeyForm::kInt)
        append_int_id(out, f.v);
    else
        out.append(f.text);
}

uint64_t IndexView::hash_of(uint32_t row) const {
    const KeyForm f = stored(row);
    if (f.kind == KeyForm::kInt) return hash_id_int(prefix_hash, f.v);
    if (f.kind == KeyForm::kText) return hash_id_text(prefix_hash, f.text.data(), f.text.size());
    return hash_key(f.text.data(), f.text.size());
}

namespace {
inline bool same_form(const KeyForm& a, const KeyForm& b) {
    if (a.kind != b.kind) return false;
    if (a.kind == KeyForm::kInt) return a.v == b.v;
    return a.text.size() == b.text.size() && same_bytes(a.text.data(), b.text.data(), a.text.size());
}
}  // namespace

size_t IndexView::find_slot(const KeyForm& key, uint64_t hash) const {
    const uint32_t fp = fingerprint(hash);
    for (size_t pos = hash & mask;; pos = (pos + 1) & mask) {
        const IndexSlot& s = slots[pos];
        if (s.row == 0xFFFFFFFFu) return mask + 1;
        if (s.fp == fp && same_form(stored(s.row), key)) return pos;
    }
}

int64_t IndexView::find(const char* key, size_t len, uint64_t hash) const {
    const size_t pos = find_slot(key, len, hash);
    return pos == mask + 1 ? -1 : static_cast<int64_t>(slots[pos].row);
}

namespace {

// The software pipeline of IndexView::find_many: for key i, the index slot of key i, the
// record of key i - kAhead (what `same` reads: the head and `reach` bytes from the inline
// key on), then, when arena_stage, the arena bytes of key i - 2 kAhead when its record
// holds an arena offset, and finally the compare of key i - lag. A template, so each
// compare (an int id's, or the general one) compiles into its own tight loop.
template <typename Same>
void pipelined_find(const IndexView& v, const uint64_t* hashes, const uint8_t* skip, size_t n, int64_t* out,
                    bool arena_stage, Same same) {
    constexpr size_t kAhead = 12;  // keys between prefetch stages: enough misses in flight
    const IndexSlot* slots = v.slots;
    const size_t mask = v.mask;
    const uint32_t kFree = 0xFFFFFFFFu;
    auto probe = [&](size_t k) -> int64_t {
        const uint64_t hash = hashes[k];
        const uint32_t fp = fingerprint(hash);
        for (size_t pos = hash & mask;; pos = (pos + 1) & mask) {
            const IndexSlot& s = slots[pos];
            if (s.row == kFree) return -1;
            if (s.fp == fp && same(k, s.row)) return static_cast<int64_t>(s.row);
        }
    };
    // Arena keys take a third stage (their offset is read from the record the second
    // prefetched); without any, the compare follows the record prefetch directly.
    const size_t lag = (arena_stage ? 3 : 2) * kAhead;
    for (size_t i = 0; i < n + lag; ++i) {
        if (i < n && !skip[i]) __builtin_prefetch(&slots[hashes[i] & mask]);
        if (i >= kAhead && i - kAhead < n && !skip[i - kAhead]) {
            const IndexSlot& s = slots[hashes[i - kAhead] & mask];
            if (s.row != kFree) {  // what the compare reads: the head and the inline key (or arena offset)
                __builtin_prefetch(v.rows.record(s.row));
                __builtin_prefetch(v.rows.record(s.row) + IndexView::kTextAt + v.inline_key - 1);
            }
        }
        if (arena_stage && i >= 2 * kAhead && i - 2 * kAhead < n && !skip[i - 2 * kAhead]) {
            const IndexSlot& s = slots[hashes[i - 2 * kAhead] & mask];
            if (s.row != kFree && v.rows.tag(s.row) > v.inline_key) {  // a long key: its arena bytes
                uint64_t off;
                std::memcpy(&off, v.rows.record(s.row) + IndexView::kIntAt, sizeof off);
                __builtin_prefetch(v.arena + off);
            }
        }
        if (i >= lag) {
            const size_t k = i - lag;
            out[k] = skip[k] ? -1 : probe(k);
        }
    }
}

}  // namespace

void IndexView::find_many(const KeyProbe& keys, const uint8_t* skip, size_t n, int64_t* out) const {
    const uint64_t* hashes = keys.hashes;
    const size_t plen = keys.prefix.size();
    // The ids' prefix is the group's (the usual case): keys are compared as ids, an int
    // id as an integer. Otherwise only keys stored whole can match.
    const bool short_form = !prefix.empty() && keys.prefix == prefix;
    if (short_form && keys.ints) {  // int ids: only a kInt record can match, never an arena key
        const int64_t* ints = keys.ints;
        return pipelined_find(*this, hashes, skip, n, out, false, [&](size_t k, uint32_t row) -> bool {
            const uint8_t* rec = rows.record(row);
            int64_t v;
            std::memcpy(&v, rec + kIntAt, sizeof v);
            return rec[kKindAt] == KeyForm::kInt && v == ints[k];
        });
    }
    // Key k equals the key of row: same form, same id (or same whole key).
    auto same = [&](size_t k, uint32_t row) -> bool {
        const uint8_t* rec = rows.record(row);
        const uint8_t kind = rec[kKindAt];
        int64_t v;
        char digits[20];
        const char* id;
        size_t len;
        if (keys.ints) {
            id = digits;
            len = static_cast<size_t>(std::to_chars(digits, digits + sizeof digits, keys.ints[k]).ptr - digits);
        } else {
            id = keys.text + keys.offs[k];
            len = keys.offs[k + 1] - keys.offs[k];
        }
        if (plen == 0) return same_form(stored(row), form_of(id, len));  // whole keys (a peer map's build)
        if (short_form && parse_int_id(id, len, v)) {
            int64_t stored_v;
            std::memcpy(&stored_v, rec + kIntAt, sizeof stored_v);
            return kind == KeyForm::kInt && stored_v == v;
        }
        if (kind != (short_form ? KeyForm::kText : KeyForm::kWhole)) return false;
        const std::string_view t = stored(row).text;
        if (short_form) return t.size() == len && same_bytes(t.data(), id, len);
        return t.size() == plen + len && same_bytes(t.data(), keys.prefix.data(), plen) &&
               same_bytes(t.data() + plen, id, len);
    };
    pipelined_find(*this, hashes, skip, n, out, arena_bytes != 0, same);
}

size_t ResidentGroup::padded_extra(size_t record, size_t id_bytes) {
    constexpr size_t kLine = 64;
    constexpr size_t kRoom = kRecordHeadBytes - IndexView::kTextAt;  // key room before the extra bytes
    const size_t padded = (record + kLine - 1) / kLine * kLine;
    const size_t pad = padded - record;  // a multiple of 8, as record is
    const bool small = padded <= 3 * kLine && pad * 3 <= record;
    const bool holds_ids = id_bytes > kRoom + kMinExtra && id_bytes <= kRoom + kMinExtra + pad;
    return record > kLine && (small || holds_ids) ? kMinExtra + pad : kMinExtra;
}

size_t ResidentGroup::extra_bytes_for(const RowLayout& schema, size_t id_bytes) {
    return padded_extra(GroupTable::record_bytes_of(schema.n_slots(), kMinExtra), id_bytes);
}

ResidentGroup::ResidentGroup(std::shared_ptr<const RowLayout> schema)
    : schema_(schema),
      inline_key_(kRecordHeadBytes - IndexView::kTextAt + extra_bytes_for(*schema, 0)),
      rows_(schema, 0, extra_bytes_for(*schema, 0)),
      id_(next_group_id()) {
    index_.assign(kInitialIndexSlots, kFree);
    reset_filter_locked();
}

ResidentGroup::ResidentGroup(std::shared_ptr<const RowLayout> schema, std::shared_ptr<const Generation> base, size_t part)
    : ResidentGroup(std::move(schema)) {
    const GenerationInfo& g = base->info();
    if (part >= g.parts.size())  // (Generation::open checked the part's schema)
        throw GenerationError("generation file " + base->path() + " is refused: it holds no part " +
                              std::to_string(part) + "; rebuild it (featurecore snapshot build)");
    const GenerationPart& p = g.parts[part];
    // The part is laid out like a record of its own (extra_bytes_for its ids; other
    // groups' parts may follow it): the overlay takes the same layout.
    const size_t own_bytes = GroupTable::record_bytes_of(schema_->n_slots(), p.extra_bytes);
    if (p.extra_bytes < kMinExtra || p.extra_bytes % 8 != 0 || p.extra_bytes > 256 ||
        g.extra_bytes < kMinExtra || g.extra_bytes > 256 || p.offset + own_bytes > g.record_bytes ||
        (g.parts.size() == 1 && own_bytes != g.record_bytes) ||
        (p.null_bytes != 0 && p.null_bytes != schema_->bitmap_bytes()))
        throw GenerationError("generation file " + base->path() + " is refused: its rows are " +
                              std::to_string(g.record_bytes) + " bytes with " + std::to_string(p.extra_bytes) +
                              " extra at " + std::to_string(p.offset) +
                              ", not a layout of this group's schema; rebuild it (featurecore snapshot build)");
    relayout_locked(p.extra_bytes);
    base_.slots = reinterpret_cast<const IndexSlot*>(base->section(kIndex));
    base_.mask = g.index_slots - 1;
    base_.rows = rows_.view();  // the keys: part 0's head and extra bytes
    base_.rows.records = base->section(kRecords);
    base_.rows.record_bytes = base_.rows.span = g.record_bytes;
    base_.rows.slots_offset = kRecordHeadBytes + g.extra_bytes;
    base_.inline_key = kRecordHeadBytes - IndexView::kTextAt + g.extra_bytes;
    base_.arena = reinterpret_cast<const char*>(base->section(kArena));
    base_.arena_bytes = g.arena_bytes;
    part_rows_ = rows_.view();  // this group's values: its part
    part_rows_.records = base->section(kRecords) + p.offset;
    part_rows_.record_bytes = g.record_bytes;
    part_rows_.span = own_bytes;
    // none: no base row has a null
    part_rows_.nulls = p.null_bytes ? base->section(kNulls) + p.null_offset : nullptr;
    prefix_ = g.key_prefix;  // the overlay's short keys too
    prefix_hash_ = hash_bytes(prefix_.data(), prefix_.size());
    base_.prefix = prefix_;
    base_.prefix_hash = prefix_hash_;
    gen_ = std::move(base);
}

IndexView ResidentGroup::own_view() const {
    IndexView v;
    v.slots = index_.data();
    v.mask = index_.size() - 1;
    v.rows = rows_.view();
    v.inline_key = inline_key_;
    v.arena = arena_.data();
    v.arena_bytes = arena_.size();
    v.prefix = prefix_;
    v.prefix_hash = prefix_hash_;
    return v;
}

TableView ResidentGroup::view_locked() const {
    if (!gen_) return rows_.view();
    const TableView overlay = rows_.view();
    TableView v = part_rows_;
    v.split = n_base();
    v.records2 = overlay.records;
    v.nulls2 = overlay.nulls;
    v.record_bytes2 = overlay.record_bytes;
    return v;
}

uint64_t ResidentGroup::arena_offset(uint32_t row) const {
    uint64_t off;
    std::memcpy(&off, rows_.extra(row), sizeof off);
    return off;
}

void ResidentGroup::set_arena_offset(uint32_t row, uint64_t off) { std::memcpy(rows_.extra(row), &off, sizeof off); }

void ResidentGroup::set_first_key_locked(std::string_view key) {
    prefix_.assign(key.data(), key_prefix_length(key.data(), key.size()));
    prefix_hash_ = hash_bytes(prefix_.data(), prefix_.size());
    const KeyForm f = own_view().form_of(key.data(), key.size());
    const size_t extra = extra_bytes_for(*schema_, f.kind == KeyForm::kInt ? 0 : f.text.size());
    if (extra != rows_.extra_bytes()) relayout_locked(extra);
}

void ResidentGroup::relayout_locked(size_t extra_bytes) {
    const size_t capacity = rows_.capacity();  // (a reserve() before the first upsert)
    rows_ = GroupTable(schema_, 0, extra_bytes);
    rows_.reserve(capacity);
    inline_key_ = kRecordHeadBytes - IndexView::kTextAt + rows_.extra_bytes();
}

void ResidentGroup::set_key(uint32_t row, std::string_view key) {
    const KeyForm f = own_view().form_of(key.data(), key.size());
    uint8_t* owner = rows_.owner_bytes(row);
    owner[0] = f.kind;
    if (f.kind == KeyForm::kInt) {
        rows_.set_tag(row, 0);
        std::memcpy(rows_.extra(row), &f.v, sizeof f.v);
        return;
    }
    rows_.set_tag(row, static_cast<uint16_t>(f.text.size()));
    if (f.text.size() <= inline_key_) {
        std::memcpy(owner + 1, f.text.data(), f.text.size());
        return;
    }
    reserve_with_slack(arena_, arena_.size() + f.text.size());
    set_arena_offset(row, arena_.size());
    arena_.insert(arena_.end(), f.text.begin(), f.text.end());
}

uint64_t ResidentGroup::hash_of_row(uint32_t row) const { return own_view().hash_of(row); }

size_t ResidentGroup::find_slot_locked(const char* key, size_t len, uint64_t hash) const {
    return own_view().find_slot(key, len, hash);
}

int64_t ResidentGroup::find_locked(const char* key, size_t len, uint64_t hash) const {
    if (rows_.n_rows() > 0 && (!gen_ || may_hold_locked(hash))) {
        const size_t pos = find_slot_locked(key, len, hash);
        if (pos != index_.size()) {
            const uint32_t r = index_[pos].row;
            return rows_.status(r) == kTombstone ? -1 : static_cast<int64_t>(n_base() + r);
        }
    }
    return gen_ ? base_.find(key, len, hash) : -1;
}

void ResidentGroup::find_many_locked(const Probe& keys, const uint8_t* skip, size_t n, int64_t* out) const {
    if (!gen_) return own_view().find_many(keys, skip, n, out);
    if (rows_.n_rows() == 0) return base_.find_many(keys, skip, n, out);  // no overlay: the base only
    thread_local std::vector<uint8_t> base_skip;  // reused: no allocation per request
    thread_local std::vector<int64_t> base_out;
    base_skip.resize(n);
    base_out.resize(n);
    // The overlay is probed only for ids its filter may hold (base_skip here: the others).
    bool any = false;
    for (size_t i = 0; i < n; ++i) {
        base_skip[i] = skip[i] || !may_hold_locked(keys.hashes[i]);
        any = any || !base_skip[i];
    }
    if (any)
        own_view().find_many(keys, base_skip.data(), n, out);
    else
        std::fill(out, out + n, int64_t{-1});
    const size_t nb = n_base();
    for (size_t i = 0; i < n; ++i) {
        base_skip[i] = skip[i] || out[i] >= 0;
        if (out[i] >= 0) out[i] = rows_.status(static_cast<size_t>(out[i])) == kTombstone ? -1 : static_cast<int64_t>(nb) + out[i];
    }
    base_.find_many(keys, base_skip.data(), n, base_out.data());
    for (size_t i = 0; i < n; ++i)
        if (!base_skip[i]) out[i] = base_out[i];
}

void ResidentGroup::insert_index_locked(uint64_t hash, uint32_t row) {
    const size_t mask = index_.size() - 1;
    size_t pos = hash & mask;
    while (index_[pos].row != kEmpty) pos = (pos + 1) & mask;
    index_[pos] = Slot{fingerprint(hash), row};
    mark_locked(hash);
}

// Backward-shift deletion keeps probe chains intact without tombstones.
void ResidentGroup::erase_slot_locked(size_t pos) {
    const size_t mask = index_.size() - 1;
    size_t hole = pos;
    for (size_t next = (hole + 1) & mask; index_[next].row != kEmpty; next = (next + 1) & mask) {
        const size_t home = hash_of_row(index_[next].row) & mask;
        // Move `next` into the hole unless its home lies cyclically in (hole, next].
        const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
        if (!stays) {
            index_[hole] = index_[next];
            hole = next;
        }
    }
    index_[hole] = kFree;
}

// The smallest index of at least `slots` slots (a power of two) keeping the load
// factor at or below 0.7 for n_keys keys.
static size_t index_slots_for(size_t n_keys, size_t slots) {
    while (n_keys * 10 > slots * 7) slots *= 2;
    return slots;
}

// Keeps the load factor at or below 0.7 for n_keys keys.
void ResidentGroup::reserve_index_locked(size_t n_keys) {
    const size_t cap = index_slots_for(n_keys, index_.size());
    if (cap != index_.size()) rebuild_index_locked(cap);
}

// Re-inserts every key into a new index of `slots` slots (a power of two, above the keys).
void ResidentGroup::rebuild_index_locked(size_t slots) {
    HugeVector<Slot> old(slots, kFree);
    old.swap(index_);
    reset_filter_locked();  // refilled by insert_index_locked
    for (const Slot& s : old)
        if (s.row != kEmpty) insert_index_locked(hash_of_row(s.row), s.row);
}

void ResidentGroup::fit_index() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    const size_t keys = static_cast<size_t>(
        std::count_if(index_.begin(), index_.end(), [](const Slot& s) { return s.row != kEmpty; }));
    const size_t cap = index_slots_for(keys, kInitialIndexSlots);
    if (cap < index_.size()) rebuild_index_locked(cap);
}

void ResidentGroup::compact_arena_locked() {
    std::vector<char> fresh;
    fresh.reserve(arena_.size() - arena_garbage_);
    const IndexView v = own_view();
    for (uint32_t r = 0; r < rows_.n_rows(); ++r) {
        if (arena_bytes_of(r) == 0) continue;
        const std::string_view k = v.stored(r).text;
        set_arena_offset(r, fresh.size());
        fresh.insert(fresh.end(), k.begin(), k.end());
    }
    arena_.swap(fresh);
    arena_garbage_ = 0;
}

std::vector<uint64_t> ResidentGroup::checked_hashes(const std::vector<std::string_view>& keys) {
    std::vector<uint64_t> hashes(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        if (keys[i].empty() || keys[i].size() > kMaxKey)
            throw std::invalid_argument("upsert: key " + std::to_string(i) + " has " +
                                        std::to_string(keys[i].size()) +
                                        " bytes; keys need 1..65535 bytes, build them with encode_key");
        hashes[i] = hash_key(keys[i].data(), keys[i].size());
    }
    return hashes;
}

std::vector<uint32_t> ResidentGroup::find_existing_locked(const std::vector<std::string_view>& keys,
                                                          const std::vector<uint64_t>& hashes) const {
    constexpr size_t kAhead = 8;  // index slots prefetched ahead of the probe
    std::vector<uint32_t> found(keys.size(), kEmpty);
    if (rows_.n_rows() == 0) return found;  // an empty group (a snapshot load) has none
    const size_t mask = index_.size() - 1;
    for (size_t i = 0; i < keys.size(); ++i) {
        if (i + kAhead < keys.size()) __builtin_prefetch(&index_[hashes[i + kAhead] & mask]);
        const size_t pos = find_slot_locked(keys[i].data(), keys[i].size(), hashes[i]);
        if (pos != index_.size()) found[i] = index_[pos].row;
    }
    return found;
}

template <typename Overwrite, typename Append>
void ResidentGroup::apply_locked(const std::vector<std::string_view>& keys, const std::vector<uint64_t>& hashes,
                                 const std::vector<uint32_t>& found, Overwrite overwrite, Append append) {
    const size_t n = keys.size();
    const size_t n0 = rows_.n_rows();
    if (n0 + n >= kEmpty) throw std::length_error("upsert: a resident group holds at most 2^32-2 rows");
    ++changes_;  // (before anything changes: a failed batch may still have changed rows' keys)
    constexpr size_t kAhead = 8;
    // 1. Allocate for every absent key before changing anything, so a bad_alloc
    //    leaves the group as it was (duplicates may make this a slight overestimate).
    const size_t n_absent = static_cast<size_t>(std::count(found.begin(), found.end(), kEmpty));
    if (n0 == 0 && !gen_ && n > 0) set_first_key_locked(keys[0]);  // an empty group: prefix and layout of its first key
    size_t long_bytes = 0;
    const IndexView own = own_view();
    for (size_t i = 0; i < n; ++i) {
        if (found[i] != kEmpty || keys[i].size() <= inline_key_) continue;
        const KeyForm f = own.form_of(keys[i].data(), keys[i].size());
        if (f.kind != KeyForm::kInt && f.text.size() > inline_key_) long_bytes += f.text.size();
    }
    reserve_index_locked(n0 + n_absent);
    rows_.reserve(n0 + n_absent);
    reserve_with_slack(arena_, arena_.size() + long_bytes);
    std::vector<uint32_t> src(n_absent);  // batch row of new row n0 + j
    // 2. Present keys are overwritten in place; absent ones are indexed as rows
    //    n0, n0 + 1, ... whose keys are still the batch's, so a later duplicate in
    //    the batch finds its row and takes it over (last one wins).
    const size_t mask = index_.size() - 1;
    size_t n_new = 0;
    for (size_t i = 0; i < n; ++i) {
        if (i + kAhead < n) __builtin_prefetch(&index_[hashes[i + kAhead] & mask]);
        if (found[i] != kEmpty) {
            overwrite(found[i], i);
            continue;
        }
        for (size_t pos = hashes[i] & mask;; pos = (pos + 1) & mask) {
            Slot& s = index_[pos];
            if (s.row == kEmpty) {
                s = Slot{fingerprint(hashes[i]), static_cast<uint32_t>(n0 + n_new)};
                mark_locked(hashes[i]);
                src[n_new++] = static_cast<uint32_t>(i);
                break;
            }
            if (s.row >= n0 && s.fp == fingerprint(hashes[i])) {
                const std::string_view k = keys[src[s.row - n0]];
                if (k.size() == keys[i].size() && same_bytes(k.data(), keys[i].data(), k.size())) {
                    src[s.row - n0] = static_cast<uint32_t>(i);
                    break;
                }
            }
        }
    }
    // 3. The new rows in one bulk append (capacity reserved above: no reallocation).
    src.resize(n_new);
    append(src);
    for (size_t j = 0; j < n_new; ++j) {
        const std::string_view key = keys[src[j]];
        set_key(static_cast<uint32_t>(n0 + j), key);
        key_bytes_ += key.size();
    }
}

size_t ResidentGroup::upsert(const std::vector<std::string_view>& keys, const GroupTable& batch, bool keep_not_computed) {
    if (!batch.schema().same_layout(*schema_))
        throw std::invalid_argument("upsert: the batch's schema (fingerprint " +
                                    std::to_string(batch.schema().fingerprint()) +
                                    ") differs from the group's (" + std::to_string(schema_->fingerprint()) +
                                    "); encode rows with the group's schema");
    if (keys.size() != batch.n_rows())
        throw std::invalid_argument("upsert: got " + std::to_string(keys.size()) + " keys for " +
                                    std::to_string(batch.n_rows()) + " rows; pass one key per row");
    size_t not_computed = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        const uint8_t status = batch.status(i);
        if (status == kNotComputed && keep_not_computed) {
            ++not_computed;
        } else if (status != kPresent) {
            throw std::invalid_argument("upsert: row " + std::to_string(i) +
                                        " is not a valid v1 row of this group's schema (status " +
                                        std::to_string(status) + "); nothing was applied");
        }
    }
    const std::vector<uint64_t> hashes = checked_hashes(keys);
    std::unique_lock<std::shared_mutex> lock(mu_);
    apply_locked(
        keys, hashes, find_existing_locked(keys, hashes),
        [&](uint32_t row, size_t i) { rows_.copy_row(row, batch, i); },
        [&](const std::vector<uint32_t>& src) { rows_.append_rows(batch, src.data(), src.size()); });
    return not_computed;
}

void ResidentGroup::upsert_columns(const std::vector<std::string_view>& keys, const ColumnsIn& in) {
    if (keys.size() != in.n)
        throw std::invalid_argument("upsert: got " + std::to_string(keys.size()) + " keys for " +
                                    std::to_string(in.n) + " rows; pass one key per row");
    const std::vector<uint64_t> hashes = checked_hashes(keys);
    {
        std::unique_lock<std::shared_mutex> lock(mu_);
        const std::vector<uint32_t> found = find_existing_locked(keys, hashes);
        if (std::count(found.begin(), found.end(), kEmpty) == static_cast<std::ptrdiff_t>(keys.size())) {
            // Only new keys (a snapshot load): every batch row is written straight from
            // the columns into the capacity apply_locked reserved (nothing allocates once
            // the index has changed); a key repeated in the batch keeps its last row.
            const size_t n0 = rows_.n_rows();
            apply_locked(
                keys, hashes, found, [](uint32_t, size_t) {},
                [&](const std::vector<uint32_t>& src) {
                    rows_.append_columns(in);
                    // New row j is batch row src[j] >= j: ascending j never reads a row
                    // it already overwrote.
                    for (size_t j = 0; j < src.size(); ++j)
                        if (src[j] != j) rows_.copy_row(n0 + j, rows_, n0 + src[j]);
                    rows_.resize(n0 + src.size());
                });
            return;
        }
    }
    upsert(keys, GroupTable::from_columns(schema_, in));  // overwrites: through a table (upsert re-probes)
}

void ResidentGroup::reserve(size_t n_rows) {
    if (n_rows >= kEmpty) throw std::length_error("reserve: a resident group holds at most 2^32-2 rows");
    std::unique_lock<std::shared_mutex> lock(mu_);
    reserve_index_locked(n_rows);
    rows_.reserve(n_rows);
}

size_t ResidentGroup::remove(const std::vector<std::string_view>& keys) {
    std::vector<uint64_t> hashes(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) hashes[i] = hash_key(keys[i].data(), keys[i].size());
    std::unique_lock<std::shared_mutex> lock(mu_);
    ++changes_;
    size_t removed = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        const size_t pos = find_slot_locked(keys[i].data(), keys[i].size(), hashes[i]);
        if (in_base(keys[i], hashes[i])) {  // a base key: its overlay row becomes (or is) a tombstone
            if (pos != index_.size()) {
                const uint32_t r = index_[pos].row;
                if (rows_.status(r) == kTombstone) continue;
                rows_.set_missing(r, kTombstone);
            } else {
                const uint32_t r = static_cast<uint32_t>(rows_.n_rows());
                reserve_index_locked(r + 1);
                rows_.resize(r + 1);
                rows_.set_missing(r, kTombstone);
                set_key(r, keys[i]);
                insert_index_locked(hashes[i], r);
                key_bytes_ += keys[i].size();
            }
            ++removed;
            continue;
        }
        if (pos == index_.size()) continue;
        const uint32_t r = index_[pos].row;
        erase_slot_locked(pos);
        key_bytes_ -= keys[i].size();
        arena_garbage_ += arena_bytes_of(r);
        const uint32_t last = static_cast<uint32_t>(rows_.n_rows() - 1);
        if (r != last) {
            // Point the last row's index slot at r, then move its record there.
            const size_t mask = index_.size() - 1;
            size_t lpos = hash_of_row(last) & mask;
            while (index_[lpos].row != last) lpos = (lpos + 1) & mask;
            index_[lpos].row = r;
            rows_.copy_row(r, rows_, last);  // the key (or its arena offset) moves with the record
        }
        rows_.resize(last);
        ++removed;
    }
    if (arena_garbage_ > 4096 && arena_garbage_ * 2 > arena_.size()) compact_arena_locked();
    return removed;
}

void ResidentGroup::lookup(const std::vector<std::string_view>& keys, int64_t* out) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i)
        out[i] = find_locked(keys[i].data(), keys[i].size(), hash_key(keys[i].data(), keys[i].size()));
}

GroupTable ResidentGroup::get(const std::vector<std::string_view>& keys) const {
    GroupTable out(schema_, keys.size());
    std::shared_lock<std::shared_mutex> lock(mu_);
    const TableView v = view_locked();
    for (size_t i = 0; i < keys.size(); ++i) {
        const int64_t r = find_locked(keys[i].data(), keys[i].size(), hash_key(keys[i].data(), keys[i].size()));
        if (r >= 0) out.copy_row(i, v, static_cast<size_t>(r));
    }
    return out;
}

void ResidentGroup::clear() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    ++changes_;
    rows_ = GroupTable(schema_, 0, rows_.extra_bytes());
    std::vector<char>().swap(arena_);
    arena_garbage_ = key_bytes_ = 0;
    index_.assign(kInitialIndexSlots, kFree);
    index_.shrink_to_fit();
    reset_filter_locked();
    filter_.shrink_to_fit();
    gen_.reset();
    base_ = IndexView();
    part_rows_ = TableView();
    prefix_.clear();
    prefix_hash_ = hash_bytes(prefix_.data(), 0);
    inline_key_ = kRecordHeadBytes - IndexView::kTextAt + rows_.extra_bytes();
}

void ResidentGroup::append_key_at_locked(size_t r, std::string& out) const {
    const size_t nb = n_base();
    if (r < nb)
        base_.append_key(static_cast<uint32_t>(r), out);
    else
        own_view().append_key(static_cast<uint32_t>(r - nb), out);
}

std::shared_ptr<const PeerRows> ResidentGroup::peer_rows_locked(const ResidentGroup& leader, size_t probed) const {
    std::unique_lock<std::mutex> lock(peer_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return nullptr;  // another thread is building: probe meanwhile
    const uint64_t lid = leader.id_, lch = leader.changes_, own = changes_;
    if (peer_ && peer_->leader_id == lid && peer_->leader_changes == lch && peer_->own_changes == own) return peer_;
    peer_.reset();  // stale: its memory goes now (a request in flight keeps its own reference)
    if (gen_ && gen_ == leader.gen_ && rows_.n_rows() == 0 && leader.rows_.n_rows() == 0) {
        // Parts of one generation with no change since: one row order (write_generation).
        auto map = std::make_shared<PeerRows>();
        map->leader_id = lid;
        map->leader_changes = lch;
        map->own_changes = own;
        map->leader_rows = n_base();
        map->identity = true;
        map->same_keys = true;
        peer_ = map;
        return peer_;
    }
    if (peer_debt_.leader_id != lid || peer_debt_.leader_changes != lch || peer_debt_.own_changes != own) {
        peer_debt_.leader_id = lid;
        peer_debt_.leader_changes = lch;
        peer_debt_.own_changes = own;
        peer_probed_ = 0;
    }
    peer_probed_ += probed;
    if (peer_probed_ < leader.n_rows_locked()) return nullptr;
    try {
        peer_ = build_peer_rows_locked(leader);
    } catch (const std::bad_alloc&) {
        peer_probed_ = 0;  // no memory for a map: serve by probing, try again later
        return nullptr;
    }
    return peer_;
}

std::shared_ptr<const PeerRows> ResidentGroup::build_peer_rows_locked(const ResidentGroup& leader) const {
    auto map = std::make_shared<PeerRows>();
    map->leader_id = leader.id_;
    map->leader_changes = leader.changes_;
    map->own_changes = changes_;
    const size_t n = leader.n_rows_locked();
    map->leader_rows = n;
    map->rows.resize(n);
    bool identity = true;  // every row the leader serves (its tombstones: never) is this group's same row
    // The leader's keys in chunks, probed like a request's ids (pipelined find_many).
    constexpr size_t kChunk = 4096;
    std::string text;
    std::vector<uint64_t> offs(kChunk + 1), hashes(kChunk);
    std::vector<uint8_t> skip(kChunk);
    std::vector<int64_t> out(kChunk);
    const TableView lv = leader.view_locked();
    for (size_t begin = 0; begin < n; begin += kChunk) {
        const size_t m = std::min(kChunk, n - begin);
        text.clear();
        for (size_t i = 0; i < m; ++i) {
            const size_t r = begin + i;
            skip[i] = lv.status(r) == kTombstone;  // never a row the leader returns
            offs[i] = text.size();
            if (!skip[i]) leader.append_key_at_locked(r, text);
            hashes[i] = hash_key(text.data() + offs[i], text.size() - offs[i]);
        }
        offs[m] = text.size();
        KeyProbe p;
        p.text = text.data();
        p.offs = offs.data();
        p.hashes = hashes.data();
        find_many_locked(p, skip.data(), m, out.data());
        for (size_t i = 0; i < m; ++i) {
            map->rows[begin + i] = out[i] < 0 ? PeerRows::kNoRow : static_cast<uint32_t>(out[i]);
            identity = identity && (skip[i] || out[i] == static_cast<int64_t>(begin + i));
        }
    }
    if (identity) {
        map->identity = true;
        std::vector<uint32_t>().swap(map->rows);
    }
    return map;
}

int64_t ResidentGroup::peer_map_rows() const {
    std::lock_guard<std::mutex> lock(peer_mu_);
    return peer_ ? static_cast<int64_t>(peer_->leader_rows) : -1;
}

size_t ResidentGroup::size() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (!gen_) return rows_.n_rows();
    // The base's rows, less those the overlay removes, plus the overlay's new keys.
    size_t n = n_base();
    for (uint32_t r = 0; r < rows_.n_rows(); ++r) {
        const bool shadows = in_base(r);
        if (rows_.status(r) == kTombstone)
            n -= shadows;
        else
            n += !shadows;
    }
    return n;
}

size_t ResidentGroup::overlay_rows() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return gen_ ? rows_.n_rows() : 0;
}

size_t ResidentGroup::nbytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    std::lock_guard<std::mutex> peer_lock(peer_mu_);
    return rows_.nbytes() + arena_.capacity() + index_.capacity() * sizeof(Slot) + filter_.capacity() * sizeof(uint64_t) +
           shared_share(gen_ ? gen_->info().file_bytes : 0) + (peer_ ? peer_->rows.capacity() * sizeof(uint32_t) : 0);
}

size_t ResidentGroup::shared_share(size_t bytes) const {
    if (!gen_ || part_rows_.span == part_rows_.record_bytes) return bytes;
    return static_cast<size_t>(static_cast<double>(bytes) * part_rows_.span / part_rows_.record_bytes);
}

size_t ResidentGroup::payload_bytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    const size_t value_bytes = schema_->row_bytes() - kHeaderBytes - schema_->bitmap_bytes() - kChecksumBytes;
    return (rows_.n_rows() + n_base()) * value_bytes + key_bytes_ + shared_share(gen_ ? gen_->info().key_bytes : 0);
}

size_t ResidentGroup::index_bytes() const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    return index_.capacity() * sizeof(Slot) + shared_share(gen_ ? gen_->info().index_slots * sizeof(Slot) : 0);
}

void ResidentGroup::write_generation(const std::string& path, uint64_t sequence) const {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (gen_)
        throw std::invalid_argument("write_generation: this group serves from generation " + gen_->path() +
                                    "; write a generation from a group loaded from RocksDB");
    GenerationInfo info;
    info.changelog_sequence = sequence;
    info.n_rows = rows_.n_rows();
    info.record_bytes = rows_.record_bytes();
    info.extra_bytes = rows_.extra_bytes();
    info.null_bytes = schema_->bitmap_bytes();
    info.index_slots = index_.size();
    info.arena_bytes = arena_.size();
    info.key_bytes = key_bytes_;
    info.key_prefix = prefix_;
    // No null bitmaps when no row has a null (readers read one only for a row whose
    // any_null byte is set): 8 bytes a row for 64 features.
    const TableView v = rows_.view();
    bool any_null = false;
    for (size_t r = 0; r < info.n_rows && !any_null; ++r) any_null = v.any_null(r);
    if (!any_null) info.null_bytes = 0;
    GenerationParts parts;
    parts.data[kRecords] = rows_.record_data().data();
    parts.bytes[kRecords] = info.n_rows * info.record_bytes;
    parts.data[kNulls] = rows_.null_bits().data();
    parts.bytes[kNulls] = info.n_rows * info.null_bytes;
    parts.data[kIndex] = index_.data();
    parts.bytes[kIndex] = index_.size() * sizeof(Slot);
    parts.data[kArena] = arena_.data();
    parts.bytes[kArena] = arena_.size();
    GenerationPart part;
    part.extra_bytes = info.extra_bytes;
    part.null_bytes = info.null_bytes;
    info.parts = {part};
    fc::write_generation(path, {schema_.get()}, info, parts);
}

void ResidentGroup::write_generation(const std::string& path, const std::vector<const ResidentGroup*>& groups,
                                     uint64_t sequence) {
    if (groups.empty()) throw std::invalid_argument("write_generation: no groups; pass at least one");
    if (groups.size() == 1) return groups[0]->write_generation(path, sequence);
    std::vector<std::shared_lock<std::shared_mutex>> locks;
    for (const ResidentGroup* g : groups) {
        for (const auto& held : locks)
            if (held.mutex() == &g->mu_)
                throw std::invalid_argument("write_generation: a group is given twice; pass each group once");
        locks.emplace_back(g->mu_);
    }
    const ResidentGroup& lead = *groups[0];
    const size_t n = lead.rows_.n_rows();
    for (size_t k = 0; k < groups.size(); ++k) {
        if (groups[k]->gen_)
            throw std::invalid_argument("write_generation: group " + std::to_string(k) + " serves from generation " +
                                        groups[k]->gen_->path() + "; write a generation from groups loaded from RocksDB");
        if (groups[k]->rows_.n_rows() != n)
            throw std::invalid_argument("write_generation: group " + std::to_string(k) + " holds " +
                                        std::to_string(groups[k]->rows_.n_rows()) + " keys, group 0 " +
                                        std::to_string(n) + "; groups of one file hold the same keys");
    }
    // rows[k][r]: group k's row of the key of group 0's row r.
    const IndexView lv = lead.own_view();
    std::vector<std::vector<uint32_t>> rows(groups.size());
    std::string key;
    for (size_t k = 1; k < groups.size(); ++k) {
        rows[k].resize(n);
        for (size_t r = 0; r < n; ++r) {
            key.clear();
            lv.append_key(static_cast<uint32_t>(r), key);
            const int64_t at = groups[k]->find_locked(key.data(), key.size(), hash_key(key.data(), key.size()));
            if (at < 0)
                throw std::invalid_argument("write_generation: group " + std::to_string(k) +
                                            " lacks a key of group 0; groups of one file hold the same keys");
            rows[k][r] = static_cast<uint32_t>(at);
        }
    }
    // Layout: part 0 (head, key extra bytes, slots), then each other group's head, kMinExtra
    // bytes (what its overlay keeps a key in) and slots; padded to whole lines when that
    // adds at most a third (and a line more when that holds ids like the first inline),
    // the padding part 0's extra bytes.
    KeyForm first;
    if (n > 0) first = lv.stored(0);
    const size_t id_bytes = first.kind == KeyForm::kInt ? 0 : first.text.size();
    size_t rest = 0;
    for (size_t k = 1; k < groups.size(); ++k)
        rest += GroupTable::record_bytes_of(groups[k]->schema_->n_slots(), kMinExtra);
    const size_t base0 = GroupTable::record_bytes_of(lead.schema_->n_slots(), kMinExtra);
    constexpr size_t kLine = 64;
    constexpr size_t kRoom = kRecordHeadBytes - IndexView::kTextAt;
    const size_t pad = (base0 + rest + kLine - 1) / kLine * kLine - base0 - rest;
    size_t extra0 = kMinExtra;
    if (pad * 3 <= base0 + rest) {
        extra0 += pad;
        if (id_bytes > kRoom + extra0 && id_bytes <= kRoom + extra0 + kLine) extra0 += kLine;
    }
    GenerationInfo info;
    info.changelog_sequence = sequence;
    info.n_rows = n;
    info.extra_bytes = extra0;
    info.index_slots = lead.index_.size();
    info.key_bytes = lead.key_bytes_;
    info.key_prefix = lead.prefix_;
    std::vector<const RowLayout*> schemas;
    size_t at = 0;
    for (size_t k = 0; k < groups.size(); ++k) {
        GenerationPart p;
        p.offset = at;
        p.extra_bytes = k == 0 ? extra0 : kMinExtra;
        p.null_offset = n * info.null_bytes;
        const TableView v = groups[k]->rows_.view();
        bool any_null = false;
        for (size_t r = 0; r < n && !any_null; ++r) any_null = v.any_null(r);
        p.null_bytes = any_null ? groups[k]->schema_->bitmap_bytes() : 0;
        info.null_bytes += p.null_bytes;
        at += GroupTable::record_bytes_of(groups[k]->schema_->n_slots(), p.extra_bytes);
        info.parts.push_back(p);
        schemas.push_back(groups[k]->schema_.get());
    }
    info.record_bytes = at;
    const size_t rb = at;
    const size_t inline0 = kRoom + extra0;
    HugeVector<uint8_t> records(n * rb, uint8_t{0});
    std::vector<uint8_t> nulls(n * info.null_bytes, 0);
    std::vector<char> arena;
    for (size_t k = 0; k < groups.size(); ++k) {
        const GenerationPart& p = info.parts[k];
        const TableView v = groups[k]->rows_.view();
        const size_t slot_bytes = 4 * groups[k]->schema_->n_slots();
        for (size_t r = 0; r < n; ++r) {
            const size_t src = k == 0 ? r : rows[k][r];
            uint8_t* dst = records.data() + r * rb + p.offset;
            std::memcpy(dst, v.record(src), 10);  // generated_at, status, any_null
            std::memcpy(dst + kRecordHeadBytes + p.extra_bytes, v.slots(src), slot_bytes);
            if (p.null_bytes) std::memcpy(nulls.data() + p.null_offset + r * p.null_bytes, v.nulls_of(src), p.null_bytes);
            if (k != 0) continue;
            // The key, in part 0's head and extra bytes (IndexView's record key).
            const KeyForm f = lv.stored(static_cast<uint32_t>(r));
            dst[IndexView::kKindAt] = f.kind;
            const uint16_t tag = static_cast<uint16_t>(f.kind == KeyForm::kInt ? 0 : f.text.size());
            std::memcpy(dst + 10, &tag, sizeof tag);
            if (f.kind == KeyForm::kInt) {
                std::memcpy(dst + IndexView::kIntAt, &f.v, sizeof f.v);
            } else if (f.text.size() <= inline0) {
                std::memcpy(dst + IndexView::kTextAt, f.text.data(), f.text.size());
            } else {
                const uint64_t off = arena.size();
                std::memcpy(dst + IndexView::kIntAt, &off, sizeof off);
                arena.insert(arena.end(), f.text.begin(), f.text.end());
            }
        }
    }
    info.arena_bytes = arena.size();
    GenerationParts sections;
    sections.data[kRecords] = records.data();
    sections.bytes[kRecords] = records.size();
    sections.data[kNulls] = nulls.data();
    sections.bytes[kNulls] = nulls.size();
    sections.data[kIndex] = lead.index_.data();
    sections.bytes[kIndex] = lead.index_.size() * sizeof(Slot);
    sections.data[kArena] = arena.data();
    sections.bytes[kArena] = arena.size();
    fc::write_generation(path, schemas, info, sections);
}

}  // namespace fc
