#include "asof_join.h"

#include <algorithm>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "reasons.h"

namespace fc {
namespace {


// Integer ids are often sequential; a finalizer spreads them over the table.
inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

// Runs fn(first, last) over [0, n) split into `threads` slices of about equal weight,
// where weight_prefix(i) is the cumulative weight of items [0, i).
template <class Weight, class Fn>
void parallel_ranges(size_t n, int threads, Weight weight_prefix, Fn fn) {
    if (threads <= 1 || n < 2) {
        fn(size_t{0}, n);
        return;
    }
    const double total = static_cast<double>(weight_prefix(n));
    std::vector<size_t> bounds{0};
    size_t i = 0;
    for (int t = 1; t < threads; ++t) {
        const double target = total * t / threads;
        size_t lo = i, hi = n;
        while (lo < hi) {  // first index whose prefix weight reaches the target
            const size_t mid = lo + (hi - lo) / 2;
            if (static_cast<double>(weight_prefix(mid)) < target) lo = mid + 1; else hi = mid;
        }
        i = lo;
        bounds.push_back(i);
    }
    bounds.push_back(n);
    std::vector<std::thread> workers;
    int t = 1;
    try {
        for (; t < threads; ++t) workers.emplace_back(fn, bounds[t], bounds[t + 1]);
    } catch (const std::system_error&) {
        // No thread for the rest: the slices still run, here. Destroying a joinable
        // std::thread would terminate the process.
    }
    for (int rest = t; rest < threads; ++rest) fn(bounds[rest], bounds[rest + 1]);
    fn(bounds[0], bounds[1]);
    for (auto& w : workers) w.join();
}

// Sorts (ref, event) pairs by ref (refs in [0, max_ref]); equal refs keep their order.
// LSD radix, 11 bits a pass, only as many passes as max_ref has bits: a million
// pairs in a few milliseconds, where a comparison sort took tens.
void radix_sort_by_ref(std::vector<std::pair<int64_t, uint32_t>>& pairs, std::vector<std::pair<int64_t, uint32_t>>& tmp,
                       uint64_t max_ref) {
    constexpr int kBits = 11;
    constexpr size_t kBuckets = size_t{1} << kBits;
    tmp.resize(pairs.size());
    for (int shift = 0; shift < 64 && (max_ref >> shift) != 0; shift += kBits) {
        std::vector<size_t> count(kBuckets + 1, 0);
        for (const auto& p : pairs) ++count[((static_cast<uint64_t>(p.first) >> shift) & (kBuckets - 1)) + 1];
        for (size_t b = 0; b < kBuckets; ++b) count[b + 1] += count[b];
        for (const auto& p : pairs) tmp[count[(static_cast<uint64_t>(p.first) >> shift) & (kBuckets - 1)]++] = p;
        pairs.swap(tmp);
    }
}

}  // namespace

AsofJoin::AsofJoin(const int64_t* event_keys, const uint8_t* event_valid, const int64_t* event_ts, size_t n,
                   bool strict, int threads)
    : strict_(strict), threads_(std::max(1, threads)), event_code_(n, -1) {
    if (n >= UINT32_MAX) throw std::invalid_argument("AsofJoin: at most 2^32 - 1 events per join; split the events");
    const size_t n_codes = insert_keys(event_keys, event_valid, n, 2 * n, event_code_.data());
    // Rebuilt at twice the distinct count: history lookups probe a table that stays in cache.
    std::vector<int64_t> distinct(n_codes);
    for (size_t slot = 0; slot < table_codes_.size(); ++slot)
        if (table_codes_[slot] >= 0) distinct[table_codes_[slot]] = table_keys_[slot];
    insert_keys(distinct.data(), nullptr, n_codes, 2 * n_codes, nullptr);

    entity_events_start_.assign(n_codes + 1, 0);
    for (size_t i = 0; i < n; ++i)
        if (event_code_[i] >= 0) ++entity_events_start_[event_code_[i] + 1];
    for (size_t c = 0; c < n_codes; ++c) entity_events_start_[c + 1] += entity_events_start_[c];
    entity_events_.resize(entity_events_start_[n_codes]);
    std::vector<uint32_t> fill(entity_events_start_.begin(), entity_events_start_.end() - 1);
    for (size_t i = 0; i < n; ++i)
        if (event_code_[i] >= 0) entity_events_[fill[event_code_[i]]++] = static_cast<uint32_t>(i);
    // Each entity's events by time: (time, index) pairs sorted in place, so the sort reads
    // contiguous memory instead of chasing event_ts[index].
    std::vector<std::pair<int64_t, uint32_t>> timed(entity_events_.size());
    for (size_t e = 0; e < timed.size(); ++e) timed[e] = {event_ts[entity_events_[e]], entity_events_[e]};
    sorted_ts_.resize(entity_events_.size());
    auto weight = [&](size_t c) { return static_cast<size_t>(entity_events_start_[c]); };
    parallel_ranges(n_codes, threads_, weight, [&](size_t first, size_t last) {
        for (size_t c = first; c < last; ++c) {
            const auto lo = timed.begin() + entity_events_start_[c], hi = timed.begin() + entity_events_start_[c + 1];
            std::sort(lo, hi);
            for (auto it = lo; it != hi; ++it) {
                const size_t e = static_cast<size_t>(it - timed.begin());
                sorted_ts_[e] = it->first;
                entity_events_[e] = it->second;
            }
        }
    });
    best_.assign(entity_events_.size(), Best{0, 0, -1});
}

// Rebuilds the hash table from the valid keys (codes in first-seen order), writes each
// key's code to codes_out (when given) and returns the number of distinct keys.
size_t AsofJoin::insert_keys(const int64_t* keys, const uint8_t* valid, size_t n, size_t capacity,
                             int32_t* codes_out) {
    size_t slots = 1024;
    while (slots < capacity) slots <<= 1;
    table_keys_.assign(slots, 0);
    table_codes_.assign(slots, -1);
    const size_t mask = slots - 1;
    int32_t n_codes = 0;
    for (size_t i = 0; i < n; ++i) {
        if (valid != nullptr && !valid[i]) continue;
        const int64_t key = keys[i];
        size_t slot = mix(static_cast<uint64_t>(key)) & mask;
        while (table_codes_[slot] != -1 && table_keys_[slot] != key) slot = (slot + 1) & mask;
        if (table_codes_[slot] == -1) {
            table_keys_[slot] = key;
            table_codes_[slot] = n_codes++;
        }
        if (codes_out != nullptr) codes_out[i] = table_codes_[slot];
    }
    return static_cast<size_t>(n_codes);
}

int32_t AsofJoin::find(int64_t key) const {
    const size_t mask = table_keys_.size() - 1;
    size_t slot = mix(static_cast<uint64_t>(key)) & mask;
    while (table_codes_[slot] != -1) {
        if (table_keys_[slot] == key) return table_codes_[slot];
        slot = (slot + 1) & mask;
    }
    return -1;
}

size_t AsofJoin::add(const int64_t* keys, const int64_t* feature_ts, const int64_t* generated_at, size_t m,
                     int64_t ref_offset) {
    if (m >= UINT32_MAX) throw std::invalid_argument("AsofJoin.add: at most 2^32 - 1 rows per chunk; pass smaller chunks");
    const size_t n_codes = n_entities();
    // Scratch buffers live across calls: fresh pages for every chunk cost more than the merge.
    std::vector<int32_t>& row_code = scratch_code_;
    row_code.resize(m);
    parallel_ranges(m, threads_, [](size_t i) { return i; }, [&](size_t first, size_t last) {
        for (size_t j = first; j < last; ++j) row_code[j] = find(keys[j]);
    });
    std::vector<uint32_t>& rows_start = scratch_start_;
    rows_start.assign(n_codes + 1, 0);
    for (size_t j = 0; j < m; ++j)
        if (row_code[j] >= 0) ++rows_start[row_code[j] + 1];
    for (size_t c = 0; c < n_codes; ++c) rows_start[c + 1] += rows_start[c];
    std::vector<Row>& rows = scratch_rows_;
    rows.resize(rows_start[n_codes]);
    std::vector<uint32_t>& fill = scratch_fill_;
    fill.assign(rows_start.begin(), rows_start.end() - 1);
    for (size_t j = 0; j < m; ++j) {
        if (row_code[j] < 0) continue;
        const int64_t avail = strict_ ? std::max(feature_ts[j], generated_at[j]) : feature_ts[j];
        rows[fill[row_code[j]]++] = Row{avail, feature_ts[j], generated_at[j], ref_offset + static_cast<int64_t>(j)};
    }
    auto weight = [&](size_t c) { return static_cast<size_t>(rows_start[c]) + entity_events_start_[c]; };
    parallel_ranges(n_codes, threads_, weight, [&](size_t first, size_t last) {
        merge_entities(first, last, rows_start, rows);
    });
    return rows.size();
}

void AsofJoin::merge_entities(size_t first, size_t last, const std::vector<uint32_t>& rows_start,
                              std::vector<Row>& rows) {
    for (size_t c = first; c < last; ++c) {
        const auto r0 = rows.begin() + rows_start[c], r1 = rows.begin() + rows_start[c + 1];
        if (r0 == r1) continue;
        std::sort(r0, r1, [](const Row& a, const Row& b) { return a.avail < b.avail; });
        // Walk the entity's events in time order; `prefix` is the best row eligible so far.
        Best prefix{0, 0, -1};
        auto k = r0;
        // Events before the chunk's earliest row learn nothing from it.
        const auto ts0 = sorted_ts_.begin() + entity_events_start_[c], ts1 = sorted_ts_.begin() + entity_events_start_[c + 1];
        const auto first_event = static_cast<uint32_t>(std::lower_bound(ts0, ts1, r0->avail) - sorted_ts_.begin());
        for (uint32_t e = first_event; e < entity_events_start_[c + 1]; ++e) {
            const int64_t t = sorted_ts_[e];
            for (; k != r1 && k->avail <= t; ++k) {
                const Best cand{k->feature_ts, k->generated_at, k->ref};
                if (wins(cand, prefix)) prefix = cand;
            }
            if (prefix.ref >= 0 && wins(prefix, best_[e])) best_[e] = prefix;
        }
    }
}

void AsofJoin::finish(int64_t* row_refs, uint8_t* miss_reason, std::vector<int64_t>& winners) {
    for (size_t i = 0; i < event_code_.size(); ++i) {
        row_refs[i] = -1;
        miss_reason[i] = event_code_[i] < 0 ? kNotApplicable : kEntityNotFound;
    }
    // (history ref, event), in buffers kept between calls (a join compacts its held rows
    // with finish() every few chunks; fresh pages each time cost more than the sort).
    std::vector<std::pair<int64_t, uint32_t>>& found = scratch_found_;
    found.clear();
    found.reserve(entity_events_.size());
    int64_t max_ref = 0;
    for (size_t e = 0; e < entity_events_.size(); ++e) {
        if (best_[e].ref < 0) continue;
        const uint32_t i = entity_events_[e];
        miss_reason[i] = kPresent;
        found.emplace_back(best_[e].ref, i);
        max_ref = std::max(max_ref, best_[e].ref);
    }
    radix_sort_by_ref(found, scratch_sorted_, static_cast<uint64_t>(max_ref));
    winners.clear();
    winners.reserve(found.size());
    for (const auto& [ref, i] : found) {
        if (winners.empty() || winners.back() != ref) winners.push_back(ref);
        row_refs[i] = static_cast<int64_t>(winners.size()) - 1;
    }
}

size_t LatestPerKey::add(const int64_t* keys, const int64_t* feature_ts, const int64_t* generated_at, size_t m,
                         int64_t ref_offset) {
    size_t eligible = 0;
    for (size_t j = 0; j < m; ++j) {
        const int64_t avail = strict_ ? std::max(feature_ts[j], generated_at[j]) : feature_ts[j];
        if (avail > as_of_) continue;
        ++eligible;
        if (2 * (best_.size() + 1) > slots_.size()) grow();
        const size_t mask = slots_.size() - 1;
        size_t slot = mix(static_cast<uint64_t>(keys[j])) & mask;
        while (slots_[slot] != -1 && best_[slots_[slot]].key != keys[j]) slot = (slot + 1) & mask;
        const AsofJoin::Best cand{feature_ts[j], generated_at[j], ref_offset + static_cast<int64_t>(j)};
        if (slots_[slot] == -1) {
            slots_[slot] = static_cast<int32_t>(best_.size());
            best_.push_back(Entry{keys[j], cand});
        } else if (AsofJoin::wins(cand, best_[slots_[slot]].best)) {
            best_[slots_[slot]].best = cand;
        }
    }
    return eligible;
}

void LatestPerKey::grow() {
    if (best_.size() >= static_cast<size_t>(INT32_MAX))
        throw std::invalid_argument("LatestPerKey: at most 2^31 - 1 distinct keys; materialize per tenant or split");
    slots_.assign(std::max<size_t>(1024, 2 * slots_.size()), -1);
    const size_t mask = slots_.size() - 1;
    for (size_t e = 0; e < best_.size(); ++e) {
        size_t slot = mix(static_cast<uint64_t>(best_[e].key)) & mask;
        while (slots_[slot] != -1) slot = (slot + 1) & mask;
        slots_[slot] = static_cast<int32_t>(e);
    }
}

void LatestPerKey::finish(std::vector<int64_t>& refs, std::vector<int64_t>& keys) const {
    std::vector<std::pair<int64_t, int64_t>> winners;  // (ref, key)
    winners.reserve(best_.size());
    for (const Entry& e : best_) winners.emplace_back(e.best.ref, e.key);
    std::sort(winners.begin(), winners.end());
    refs.resize(winners.size());
    keys.resize(winners.size());
    for (size_t i = 0; i < winners.size(); ++i) {
        refs[i] = winners[i].first;
        keys[i] = winners[i].second;
    }
}

void decimal_text_order(const int64_t* ids, size_t n, int64_t* order) {
    // Text order = '-' before digits, then the digits as a string: an id's digits padded
    // on the right to 19 places compare like the strings, and on equal padding the
    // shorter text ("1" before "10") comes first.
    struct Key {
        uint8_t non_negative;
        uint64_t padded;
        uint8_t digits;
        int64_t index;
        bool operator<(const Key& o) const {
            if (non_negative != o.non_negative) return non_negative < o.non_negative;
            if (padded != o.padded) return padded < o.padded;
            if (digits != o.digits) return digits < o.digits;
            return index < o.index;
        }
    };
    std::vector<Key> keys(n);
    for (size_t i = 0; i < n; ++i) {
        const uint64_t magnitude = ids[i] < 0 ? 0 - static_cast<uint64_t>(ids[i]) : static_cast<uint64_t>(ids[i]);
        uint8_t digits = 1;
        for (uint64_t v = magnitude; v >= 10; v /= 10) ++digits;
        uint64_t padded = magnitude;
        for (uint8_t d = digits; d < 19; ++d) padded *= 10;  // magnitude < 10^digits: no overflow
        keys[i] = Key{static_cast<uint8_t>(ids[i] >= 0), padded, digits, static_cast<int64_t>(i)};
    }
    std::sort(keys.begin(), keys.end());
    for (size_t i = 0; i < n; ++i) order[i] = keys[i].index;
}

}  // namespace fc
