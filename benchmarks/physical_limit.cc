// The physical limit of W1's output, as a standalone program (no Python in the loop).
//
// For each request: hash every candidate id, probe an open-addressing index with the
// slots (8 bytes: 32-bit fingerprint + 32-bit row) prefetched in a batch ahead, compare
// the id only on a fingerprint match, then memcpy the row's 64 item floats, the
// creator's 8 and the user's 16 into a preallocated matrix (a default row for a miss).
// That is the least work any engine must do for this output: bench_w1_ids.py compiles
// it with the extension's optimization level and reports featurecore against it.
//
// Input (binary, little endian, written by bench_w1_ids.py), argv[1]:
//   u32 kind (0 = int64 ids, 1 = byte-string ids), u32 n_items, u32 n_creators, u32 n_users,
//   u32 n_requests, u32 n_candidates, u32 rounds
//   item ids: kind 0: i64[n_items]; kind 1: u64 offsets[n_items + 1], bytes
//   item rows f32[n_items * 64], creator rows f32[n_creators * 8], user rows f32[n_users * 16]
//   per request: user i64, creator ids i64[n], item ids (kind 0: i64[n]; kind 1: offsets, bytes)
// Output (stdout): one line "p50_ns p99_ns checksum" for `rounds` requests served in a loop.
// Built with -DFC_LIMIT_LIBRARY -shared instead, the same work is a library that serves one
// request per call (limit_open, limit_serve): bench_w1_ids.py runs it as a contender
// interleaved with the others, in the same process and the same cache state.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kItem = 64, kCreator = 8, kUser = 16, kWidth = kItem + kCreator + kUser;

inline uint64_t mix(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

inline uint64_t hash_bytes(const char* p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        h = mix(h ^ w);
    }
    uint64_t t = 0;
    std::memcpy(&t, p + i, n - i);
    return mix(h ^ t);
}

struct Slot {
    uint32_t fp, row;
};
constexpr uint32_t kEmpty = 0xFFFFFFFFu;

// Ids are int64 (kind 0) or byte strings in an arena (kind 1).
struct Ids {
    std::vector<int64_t> ints;
    std::vector<uint64_t> offs;
    std::string bytes;
    size_t size() const { return offs.empty() ? ints.size() : offs.size() - 1; }
    uint64_t hash(size_t i) const {
        return offs.empty() ? mix(static_cast<uint64_t>(ints[i]))
                            : hash_bytes(bytes.data() + offs[i], offs[i + 1] - offs[i]);
    }
    bool same(size_t i, const Ids& o, size_t j) const {
        if (offs.empty()) return ints[i] == o.ints[j];
        const size_t a = offs[i + 1] - offs[i], b = o.offs[j + 1] - o.offs[j];
        return a == b && std::memcmp(bytes.data() + offs[i], o.bytes.data() + o.offs[j], a) == 0;
    }
};

struct Index {
    std::vector<Slot> slots;
    size_t mask = 0;
    explicit Index(const Ids& keys) {
        size_t cap = 16;
        while (cap * 7 < keys.size() * 10) cap *= 2;
        slots.assign(cap, Slot{0, kEmpty});
        mask = cap - 1;
        for (size_t r = 0; r < keys.size(); ++r) {
            const uint64_t h = keys.hash(r);
            size_t pos = h & mask;
            while (slots[pos].row != kEmpty) pos = (pos + 1) & mask;
            slots[pos] = Slot{static_cast<uint32_t>(h >> 32), static_cast<uint32_t>(r)};
        }
    }
    // Rows of q's ids (kEmpty when absent), slots prefetched a batch ahead.
    void find(const Ids& keys, const Ids& q, uint64_t* hashes, uint32_t* out) const {
        const size_t n = q.size();
        for (size_t i = 0; i < n; ++i) {
            hashes[i] = q.hash(i);
            __builtin_prefetch(&slots[hashes[i] & mask]);
        }
        for (size_t i = 0; i < n; ++i) {
            const uint32_t fp = static_cast<uint32_t>(hashes[i] >> 32);
            uint32_t row = kEmpty;
            for (size_t pos = hashes[i] & mask;; pos = (pos + 1) & mask) {
                const Slot s = slots[pos];
                if (s.row == kEmpty) break;
                if (s.fp == fp && keys.same(s.row, q, i)) {
                    row = s.row;
                    break;
                }
            }
            out[i] = row;
        }
    }
};

template <typename T>
T get(FILE* f) {
    T v;
    if (std::fread(&v, sizeof v, 1, f) != 1) throw std::runtime_error("truncated input");
    return v;
}

template <typename T>
void get_n(FILE* f, std::vector<T>& v, size_t n) {
    v.resize(n);
    if (n && std::fread(v.data(), sizeof(T), n, f) != n) throw std::runtime_error("truncated input");
}

Ids read_ids(FILE* f, uint32_t kind, size_t n) {
    Ids ids;
    if (kind == 0) {
        get_n(f, ids.ints, n);
        return ids;
    }
    get_n(f, ids.offs, n + 1);
    std::vector<char> b;
    get_n(f, b, ids.offs[n]);
    ids.bytes.assign(b.begin(), b.end());
    return ids;
}

// The loaded input: indexes, tables, requests and the output matrix, so that a request's
// work (serve) is the unavoidable part alone.
class Limit {
  public:
    explicit Limit(const char* path) {
        FILE* f = std::fopen(path, "rb");
        if (!f) throw std::runtime_error(std::string("cannot open ") + path);
        try {
            load(f);
        } catch (...) {
            std::fclose(f);
            throw;
        }
        std::fclose(f);
    }
    uint32_t n_requests() const { return static_cast<uint32_t>(requests_.size()); }
    uint32_t rounds() const { return rounds_; }
    const std::vector<float>& out() const { return out_; }

    // Request k's matrix into out(): hash, probe, memcpy (a default row for a miss).
    void serve(uint32_t k) {
        const Request& r = requests_[k % requests_.size()];
        user_.ints[0] = r.user;
        uint32_t user_row;
        user_index_->find(user_keys_, user_, hashes_.data(), &user_row);
        item_index_->find(item_keys_, r.items, hashes_.data(), item_rows_.data());
        creator_index_->find(creator_keys_, r.creators, hashes_.data(), creator_rows_.data());
        const float* u = user_row == kEmpty ? zeros_.data() : &users_[size_t{user_row} * kUser];
        for (uint32_t i = 0; i < n_; ++i) {
            if (i + 8 < n_ && item_rows_[i + 8] != kEmpty) __builtin_prefetch(&items_[size_t{item_rows_[i + 8]} * kItem]);
            float* o = &out_[size_t{i} * kWidth];
            std::memcpy(o, item_rows_[i] == kEmpty ? zeros_.data() : &items_[size_t{item_rows_[i]} * kItem],
                        kItem * sizeof(float));
            std::memcpy(o + kItem,
                        creator_rows_[i] == kEmpty ? zeros_.data() : &creators_[size_t{creator_rows_[i]} * kCreator],
                        kCreator * sizeof(float));
            std::memcpy(o + kItem + kCreator, u, kUser * sizeof(float));
        }
    }

  private:
    struct Request {
        int64_t user;
        Ids creators, items;
    };

    void load(FILE* f) {
        const uint32_t kind = get<uint32_t>(f), n_items = get<uint32_t>(f), n_creators = get<uint32_t>(f),
                       n_users = get<uint32_t>(f), n_requests = get<uint32_t>(f);
        n_ = get<uint32_t>(f);
        rounds_ = get<uint32_t>(f);
        item_keys_ = read_ids(f, kind, n_items);
        get_n(f, items_, size_t{n_items} * kItem);
        get_n(f, creators_, size_t{n_creators} * kCreator);
        get_n(f, users_, size_t{n_users} * kUser);
        requests_.resize(n_requests);
        for (Request& r : requests_) {
            r.user = get<int64_t>(f);
            r.creators = read_ids(f, 0, n_);
            r.items = read_ids(f, kind, n_);
        }
        for (uint32_t i = 0; i < n_creators; ++i) creator_keys_.ints.push_back(i);  // creators and users are
        for (uint32_t i = 0; i < n_users; ++i) user_keys_.ints.push_back(i);        // ids 0.. in row order
        item_index_ = std::make_unique<Index>(item_keys_);
        creator_index_ = std::make_unique<Index>(creator_keys_);
        user_index_ = std::make_unique<Index>(user_keys_);
        out_.assign(size_t{n_} * kWidth, 0.0f);
        zeros_.assign(kWidth, 0.0f);
        hashes_.resize(n_);
        item_rows_.resize(n_);
        creator_rows_.resize(n_);
        user_.ints.push_back(0);
    }

    uint32_t n_ = 0, rounds_ = 0;
    Ids item_keys_, creator_keys_, user_keys_, user_;
    std::vector<float> items_, creators_, users_, out_, zeros_;
    std::vector<Request> requests_;
    std::unique_ptr<Index> item_index_, creator_index_, user_index_;
    std::vector<uint64_t> hashes_;
    std::vector<uint32_t> item_rows_, creator_rows_;
};

}  // namespace

#ifdef FC_LIMIT_LIBRARY
// The same loop as a shared library, so bench_w1_ids.py can run it interleaved with the
// Python contenders, one request per round like them (ctypes: limit_open, limit_serve).
extern "C" {
void* limit_open(const char* path) {
    try {
        return new Limit(path);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "physical_limit: %s\n", e.what());
        return nullptr;
    }
}
// Serves request k; returns the nanoseconds the work took (timed here, so the ctypes call
// costs the baseline nothing).
int64_t limit_serve(void* limit, uint32_t k) {
    const auto t0 = std::chrono::steady_clock::now();
    static_cast<Limit*>(limit)->serve(k);
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}
// The matrix of the last request served (n x 88 float32: item, creator, user columns).
const float* limit_out(void* limit) { return static_cast<Limit*>(limit)->out().data(); }
void limit_close(void* limit) { delete static_cast<Limit*>(limit); }
}
#else
int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: physical_limit INPUT\n");
        return 2;
    }
    try {
        Limit limit(argv[1]);
        std::vector<int64_t> ns(limit.rounds());
        double checksum = 0;
        for (uint32_t k = 0; k < limit.rounds(); ++k) {
            const auto t0 = std::chrono::steady_clock::now();
            limit.serve(k % limit.n_requests());
            ns[k] = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
            checksum += limit.out()[(k * 7919u) % limit.out().size()];
        }
        std::sort(ns.begin(), ns.end());
        std::printf("%lld %lld %.6f\n", static_cast<long long>(ns[ns.size() / 2]),
                    static_cast<long long>(ns[std::min(ns.size() - 1, ns.size() * 99 / 100)]), checksum);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "physical_limit: %s\n", e.what());
        return 2;
    }
    return 0;
}
#endif
