#include "asof_join.h"

#include <algorithm>
#include <stdexcept>
#include <thread>

namespace featurecore {
namespace {

constexpr uint8_t kPresent = 0;
constexpr uint8_t kNoHistory = 1;
constexpr uint8_t kNotApplicable = 2;
constexpr uint8_t kEntityNotFound = 6;

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
    for (int t = 1; t < threads; ++t) workers.emplace_back(fn, bounds[t], bounds[t + 1]);
    fn(bounds[0], bounds[1]);
    for (auto& w : workers) w.join();
}

}  // namespace

AsofJoin::AsofJoin(const int64_t* event_keys, const uint8_t* event_valid, const int64_t* event_ts, size_t n,
                   bool strict, int threads)
    : strict_(strict), threads_(std::max(1, threads)), event_code_(n, -1), event_ts_(event_ts, event_ts + n) {
    if (n >= UINT32_MAX) throw std::invalid_argument("AsofJoin: at most 2^32 - 1 events per join; split the events");
    size_t capacity = 1024;
    while (capacity < 2 * n) capacity <<= 1;
    // Sized for the worst case (every key distinct) so inserts never rehash.
    table_keys_.assign(capacity, 0);
    table_codes_.assign(capacity, -1);
    const size_t mask = capacity - 1;
    int32_t n_codes = 0;
    for (size_t i = 0; i < n; ++i) {
        if (event_valid != nullptr && !event_valid[i]) continue;
        const int64_t key = event_keys[i];
        size_t slot = mix(static_cast<uint64_t>(key)) & mask;
        while (table_codes_[slot] != -1 && table_keys_[slot] != key) slot = (slot + 1) & mask;
        if (table_codes_[slot] == -1) {
            table_keys_[slot] = key;
            table_codes_[slot] = n_codes++;
        }
        event_code_[i] = table_codes_[slot];
    }
    entity_events_start_.assign(static_cast<size_t>(n_codes) + 1, 0);
    for (size_t i = 0; i < n; ++i)
        if (event_code_[i] >= 0) ++entity_events_start_[event_code_[i] + 1];
    for (int32_t c = 0; c < n_codes; ++c) entity_events_start_[c + 1] += entity_events_start_[c];
    entity_events_.resize(entity_events_start_[n_codes]);
    std::vector<uint32_t> fill(entity_events_start_.begin(), entity_events_start_.end() - 1);
    for (size_t i = 0; i < n; ++i)
        if (event_code_[i] >= 0) entity_events_[fill[event_code_[i]]++] = static_cast<uint32_t>(i);
    for (int32_t c = 0; c < n_codes; ++c) {
        auto first = entity_events_.begin() + entity_events_start_[c];
        auto last = entity_events_.begin() + entity_events_start_[c + 1];
        std::sort(first, last, [this](uint32_t a, uint32_t b) { return event_ts_[a] < event_ts_[b]; });
    }
    seen_.assign(n_codes, 0);
    best_.assign(n, Best{0, 0, -1});
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
    std::vector<int32_t> row_code(m);
    parallel_ranges(m, threads_, [](size_t i) { return i; }, [&](size_t first, size_t last) {
        for (size_t j = first; j < last; ++j) row_code[j] = find(keys[j]);
    });
    std::vector<uint32_t> rows_start(n_codes + 1, 0);
    for (size_t j = 0; j < m; ++j)
        if (row_code[j] >= 0) ++rows_start[row_code[j] + 1];
    for (size_t c = 0; c < n_codes; ++c) rows_start[c + 1] += rows_start[c];
    std::vector<uint32_t> rows(rows_start[n_codes]);
    std::vector<uint32_t> fill(rows_start.begin(), rows_start.end() - 1);
    for (size_t j = 0; j < m; ++j)
        if (row_code[j] >= 0) rows[fill[row_code[j]]++] = static_cast<uint32_t>(j);
    for (size_t c = 0; c < n_codes; ++c)
        if (rows_start[c + 1] > rows_start[c]) seen_[c] = 1;
    auto weight = [&](size_t c) { return static_cast<size_t>(rows_start[c]) + entity_events_start_[c]; };
    parallel_ranges(n_codes, threads_, weight, [&](size_t first, size_t last) {
        merge_entities(first, last, rows_start, rows, feature_ts, generated_at, ref_offset);
    });
    return rows.size();
}

void AsofJoin::merge_entities(size_t first, size_t last, const std::vector<uint32_t>& rows_start,
                              const std::vector<uint32_t>& rows, const int64_t* feature_ts,
                              const int64_t* generated_at, int64_t ref_offset) {
    struct Item {
        int64_t avail;  // the earliest event time at which the row is eligible
        uint32_t row;
    };
    std::vector<Item> items;
    for (size_t c = first; c < last; ++c) {
        const uint32_t r0 = rows_start[c], r1 = rows_start[c + 1];
        if (r0 == r1) continue;
        items.clear();
        for (uint32_t k = r0; k < r1; ++k) {
            const uint32_t j = rows[k];
            items.push_back({strict_ ? std::max(feature_ts[j], generated_at[j]) : feature_ts[j], j});
        }
        std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.avail < b.avail; });
        // Walk the entity's events in time order; `prefix` is the best row eligible so far.
        Best prefix{0, 0, -1};
        size_t k = 0;
        for (uint32_t e = entity_events_start_[c]; e < entity_events_start_[c + 1]; ++e) {
            const uint32_t i = entity_events_[e];
            const int64_t t = event_ts_[i];
            for (; k < items.size() && items[k].avail <= t; ++k) {
                const uint32_t j = items[k].row;
                const Best cand{feature_ts[j], generated_at[j], ref_offset + static_cast<int64_t>(j)};
                if (wins(cand, prefix)) prefix = cand;
            }
            if (prefix.ref < 0) continue;
            Best& best = best_[i];
            if (wins(prefix, best)) best = prefix;
        }
    }
}

void AsofJoin::finish(int64_t* row_refs, uint8_t* miss_reason) const {
    for (size_t i = 0; i < best_.size(); ++i) {
        row_refs[i] = best_[i].ref;
        if (event_code_[i] < 0) miss_reason[i] = kNotApplicable;
        else if (best_[i].ref >= 0) miss_reason[i] = kPresent;
        else miss_reason[i] = seen_[event_code_[i]] ? kNoHistory : kEntityNotFound;
    }
}

}  // namespace featurecore
