#include "generation.h"

#include "group_table.h"
#include "keys.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace fc {
namespace {

constexpr char kMagic[8] = {'F', 'C', 'G', 'E', 'N', 'v', '1', '\n'};

// Fixed header fields, in file order (then parts[n_parts], dtypes[n], dims[n], key prefix).
struct RawHeader {
    char magic[8];
    uint32_t format_version;
    uint32_t header_bytes;
    uint64_t file_bytes;
    uint64_t changelog_sequence;
    uint32_t schema_fingerprint;  // part 0's
    uint32_t n_features;          // of every part
    uint64_t n_rows, record_bytes, extra_bytes, null_bytes, index_slots, arena_bytes, key_bytes;
    uint64_t prefix_bytes;  // the group's key prefix, after dims (GenerationInfo::key_prefix)
    uint64_t section_offset[kSections];
    uint32_t body_crc;
    uint32_t header_crc;
    uint32_t n_parts;
    uint32_t zero;
};
static_assert(sizeof(RawHeader) == 152, "the header layout is the file format");
constexpr size_t kHeaderCrcAt = offsetof(RawHeader, header_crc);

struct RawPart {
    uint32_t schema_fingerprint;
    uint32_t n_features;
    uint64_t offset, extra_bytes, null_bytes, null_offset;
};
static_assert(sizeof(RawPart) == 40, "the part layout is the file format");
// Parts in one file: far more than groups of one entity anyone reads together.
constexpr size_t kMaxParts = 64;

size_t round_up(size_t n) { return (n + kPageBytes - 1) / kPageBytes * kPageBytes; }
size_t header_bytes_for(size_t n_parts, size_t n_features, size_t prefix_bytes) {
    return round_up(sizeof(RawHeader) + sizeof(RawPart) * n_parts + 5 * n_features + prefix_bytes);
}
// The longest key prefix: format byte, two length bytes, tenant and entity type (keys.h).
constexpr size_t kMaxPrefixBytes = 3 + 2 * kMaxNameBytes;

uint32_t header_checksum(const uint8_t* header, size_t n) {
    const uint8_t zero[4] = {0, 0, 0, 0};
    uint32_t crc = crc32c(header, kHeaderCrcAt);
    crc = crc32c(zero, 4, crc);
    return crc32c(header + kHeaderCrcAt + 4, n - kHeaderCrcAt - 4, crc);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// Four independent CRC chains in one loop: the crc32 instruction's latency is hidden,
// so a whole generation is checked at memory speed.
__attribute__((target("sse4.2"))) void crc4_sse42(const uint8_t* p, size_t lane, uint32_t out[4]) {
    uint64_t c[4] = {~0u, ~0u, ~0u, ~0u};
    for (size_t i = 0; i < lane; i += 8) {
        for (int k = 0; k < 4; ++k) {
            uint64_t v;
            std::memcpy(&v, p + k * lane + i, 8);
            c[k] = __builtin_ia32_crc32di(c[k], v);
        }
    }
    for (int k = 0; k < 4; ++k) out[k] = ~static_cast<uint32_t>(c[k]);
}
#endif

// The body (a multiple of 4096 bytes) as four equal lanes, each CRC-32C'd; the body's
// checksum is the CRC-32C of the four lane CRCs (little-endian).
uint32_t body_checksum(const uint8_t* body, size_t n) {
    const size_t lane = n / 4;
    uint32_t lanes[4];
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("sse4.2")) {
        crc4_sse42(body, lane, lanes);
        return crc32c(reinterpret_cast<const uint8_t*>(lanes), sizeof lanes);
    }
#endif
    for (int k = 0; k < 4; ++k) lanes[k] = crc32c(body + k * lane, lane);
    return crc32c(reinterpret_cast<const uint8_t*>(lanes), sizeof lanes);
}

std::string sys_error(const std::string& what, const std::string& path) {
    return what + " " + path + ": " + std::strerror(errno);
}

// A read-only mapping of a whole file, unmapped on destruction unless released.
struct Mapping {
    const uint8_t* p = nullptr;
    size_t n = 0;
    ~Mapping() {
        if (p) munmap(const_cast<uint8_t*>(p), n);
    }
};

// The file a mapping was made from: another inode, size or timestamp is another file.
struct FileId {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_s = 0, mtime_ns = 0, ctime_s = 0, ctime_ns = 0;
    bool operator==(const FileId& o) const {
        return dev == o.dev && ino == o.ino && size == o.size && mtime_s == o.mtime_s && mtime_ns == o.mtime_ns &&
               ctime_s == o.ctime_s && ctime_ns == o.ctime_ns;
    }
};

FileId file_id(const struct stat& st) {
    FileId id;
    id.dev = static_cast<uint64_t>(st.st_dev);
    id.ino = static_cast<uint64_t>(st.st_ino);
    id.size = static_cast<uint64_t>(st.st_size);
#if defined(__APPLE__)
    const struct timespec& mtime = st.st_mtimespec;
    const struct timespec& ctime = st.st_ctimespec;
#else
    const struct timespec& mtime = st.st_mtim;
    const struct timespec& ctime = st.st_ctim;
#endif
    id.mtime_s = mtime.tv_sec;
    id.mtime_ns = mtime.tv_nsec;
    id.ctime_s = ctime.tv_sec;
    id.ctime_ns = ctime.tv_nsec;
    return id;
}

// populate: the whole file is about to be read (checksum), so its page table entries
// are made in one go instead of one fault per few pages. Returns the mapped file's identity.
FileId map_file(const std::string& path, Mapping& m, bool populate) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw GenerationError(sys_error("cannot open generation file", path));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ::close(fd);
        throw GenerationError(sys_error("cannot stat generation file", path));
    }
    m.n = static_cast<size_t>(st.st_size);
    if (m.n < kPageBytes) {
        ::close(fd);
        throw GenerationError("generation file " + path + " is truncated: " + std::to_string(m.n) +
                              " bytes, shorter than its header; rebuild it (featurecore snapshot build)");
    }
#if defined(MAP_POPULATE)
    const int prefault = populate ? MAP_POPULATE : 0;
#else
    const int prefault = 0;  // Linux only (not on macOS): the pages then fault in on first read
#endif
    void* p = mmap(nullptr, m.n, PROT_READ, MAP_SHARED | prefault, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw GenerationError(sys_error("cannot map generation file", path));
    m.p = static_cast<const uint8_t*>(p);
    return file_id(st);
}

// This process's verified mappings, by path (see Generation in generation.h). Never
// destroyed: a Generation may outlive static destruction at exit. Fork-safe as long as
// no other thread holds the mutex when the process forks (a preloading parent forks
// from its one thread).
struct Verified {
    FileId id;
    std::weak_ptr<const Generation> generation;
};
std::mutex& verified_mutex() {
    static auto* m = new std::mutex;
    return *m;
}
std::unordered_map<std::string, Verified>& verified() {
    static auto* v = new std::unordered_map<std::string, Verified>;
    return *v;
}

// The live verified mapping of the file now at `path`, or nullptr.
std::shared_ptr<const Generation> verified_mapping(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return nullptr;  // the caller's open reports it
    const FileId id = file_id(st);
    std::lock_guard<std::mutex> lock(verified_mutex());
    auto it = verified().find(path);
    if (it == verified().end() || !(it->second.id == id)) return nullptr;
    return it->second.generation.lock();
}

void remember_verified(const std::string& path, const FileId& id, const std::shared_ptr<const Generation>& g) {
    std::lock_guard<std::mutex> lock(verified_mutex());
    auto& v = verified();
    for (auto it = v.begin(); it != v.end();) it = it->second.generation.expired() ? v.erase(it) : std::next(it);
    v[path] = Verified{id, g};
}

// Checks everything but the body checksum and the schema; returns the header.
RawHeader check_header(const std::string& path, const uint8_t* base, size_t size) {
    auto bad = [&](const std::string& why) {
        return GenerationError("generation file " + path + " is refused: " + why +
                               "; rebuild it (featurecore snapshot build)");
    };
    RawHeader h;
    std::memcpy(&h, base, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) throw bad("not a featurecore generation (bad magic)");
    if (h.format_version != kGenerationFormat)
        throw bad("format version " + std::to_string(h.format_version) + ", this featurecore reads " +
                  std::to_string(kGenerationFormat));
    if (h.n_parts == 0 || h.n_parts > kMaxParts || h.n_features > 0xFFFFFF || h.prefix_bytes > kMaxPrefixBytes ||
        h.header_bytes < sizeof h || h.header_bytes % kPageBytes != 0 || h.header_bytes > size ||
        h.header_bytes != header_bytes_for(h.n_parts, h.n_features, h.prefix_bytes))
        throw bad("bad header size");
    if (header_checksum(base, h.header_bytes) != h.header_crc) throw bad("header checksum mismatch (corrupt)");
    if (h.file_bytes != size)
        throw bad("truncated or extended: " + std::to_string(size) + " bytes, the header says " +
                  std::to_string(h.file_bytes));
    const uint64_t want[kSections] = {h.n_rows * h.record_bytes, h.n_rows * h.null_bytes, h.index_slots * kIndexSlotBytes,
                                      h.arena_bytes};
    uint64_t at = h.header_bytes;
    for (int s = 0; s < kSections; ++s) {
        if (h.section_offset[s] != at) throw bad("section " + std::to_string(s) + " is misplaced");
        at += round_up(want[s]);
    }
    if (at != h.file_bytes) throw bad("sections do not fill the file");
    if (h.index_slots == 0 || (h.index_slots & (h.index_slots - 1)) != 0 || h.n_rows >= h.index_slots ||
        h.n_rows >= 0xFFFFFFFFull)
        throw bad("bad index size");
    // Parts: part 0 at 0 with the header's extra bytes (the key's), each after the last
    // one's head inside the record, the features and bitmaps adding up.
    uint64_t features = 0, nulls = 0, last_end = 0;
    for (uint32_t k = 0; k < h.n_parts; ++k) {
        RawPart p;
        std::memcpy(&p, base + sizeof h + k * sizeof p, sizeof p);
        const bool first_ok = k > 0 || (p.offset == 0 && p.extra_bytes == h.extra_bytes &&
                                         p.schema_fingerprint == h.schema_fingerprint);
        if (!first_ok || (k > 0 && p.offset < last_end) || p.offset % 8 != 0 || p.extra_bytes % 8 != 0 ||
            p.extra_bytes > 256 || p.offset + kRecordHeadBytes + p.extra_bytes > h.record_bytes ||
            p.null_offset != h.n_rows * nulls || p.n_features > h.n_features)
            throw bad("part " + std::to_string(k) + " is misplaced");
        last_end = p.offset + kRecordHeadBytes + p.extra_bytes;
        features += p.n_features;
        nulls += p.null_bytes;
    }
    if (features != h.n_features || nulls != h.null_bytes) throw bad("the parts do not add up to the records");
    return h;
}

// The header fields of a checked header at base.
GenerationInfo info_of(const RawHeader& h, const uint8_t* base) {
    GenerationInfo i;
    i.key_prefix.assign(reinterpret_cast<const char*>(base) + sizeof h + sizeof(RawPart) * h.n_parts + 5 * h.n_features,
                        h.prefix_bytes);
    for (uint32_t k = 0; k < h.n_parts; ++k) {
        RawPart r;
        std::memcpy(&r, base + sizeof h + k * sizeof r, sizeof r);
        GenerationPart p;
        p.schema_fingerprint = r.schema_fingerprint;
        p.n_features = r.n_features;
        p.offset = r.offset;
        p.extra_bytes = r.extra_bytes;
        p.null_bytes = r.null_bytes;
        p.null_offset = r.null_offset;
        i.parts.push_back(p);
    }
    i.format_version = h.format_version;
    i.file_bytes = h.file_bytes;
    i.changelog_sequence = h.changelog_sequence;
    i.schema_fingerprint = h.schema_fingerprint;
    i.n_rows = h.n_rows;
    i.record_bytes = h.record_bytes;
    i.extra_bytes = h.extra_bytes;
    i.null_bytes = h.null_bytes;
    i.index_slots = h.index_slots;
    i.arena_bytes = h.arena_bytes;
    i.key_bytes = h.key_bytes;
    return i;
}

}  // namespace

void write_generation(const std::string& path, const std::vector<const RowLayout*>& schemas, GenerationInfo info,
                      const GenerationParts& parts) {
    if (schemas.empty() || schemas.size() > kMaxParts || info.parts.size() != schemas.size())
        throw std::invalid_argument("write_generation: " + std::to_string(schemas.size()) + " schemas for " +
                                    std::to_string(info.parts.size()) + " parts; pass 1.." +
                                    std::to_string(kMaxParts) + " groups, one part each");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw std::invalid_argument(sys_error("cannot create generation file", path));
    auto fail = [&](const std::string& what) {
        const std::string msg = sys_error(what, path);
        ::close(fd);
        ::unlink(path.c_str());
        throw GenerationError(msg);
    };
    auto write_all = [&](const void* data, size_t n) {
        const char* p = static_cast<const char*>(data);
        while (n > 0) {
            const ssize_t w = ::write(fd, p, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                fail("cannot write generation file");
            }
            p += w;
            n -= static_cast<size_t>(w);
        }
    };
    size_t nf = 0;
    for (const RowLayout* schema : schemas) nf += schema->n_features();
    const size_t np = schemas.size();
    if (info.key_prefix.size() > kMaxPrefixBytes)
        throw std::invalid_argument("write_generation: a key prefix of " + std::to_string(info.key_prefix.size()) +
                                    " bytes; keys.h's prefixes have at most " + std::to_string(kMaxPrefixBytes));
    const size_t hb = header_bytes_for(np, nf, info.key_prefix.size());
    std::vector<uint8_t> header(hb, 0);
    std::vector<uint8_t> zeros(kPageBytes, 0);
    write_all(header.data(), hb);  // rewritten at the end, with the checksums
    RawHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.format_version = kGenerationFormat;
    h.header_bytes = static_cast<uint32_t>(hb);
    uint64_t at = hb;
    for (int s = 0; s < kSections; ++s) {
        h.section_offset[s] = at;
        if (parts.bytes[s]) write_all(parts.data[s], parts.bytes[s]);
        const size_t pad = round_up(parts.bytes[s]) - parts.bytes[s];
        if (pad) write_all(zeros.data(), pad);
        at += round_up(parts.bytes[s]);
    }
    h.file_bytes = at;
    h.changelog_sequence = info.changelog_sequence;
    h.schema_fingerprint = schemas[0]->fingerprint();
    h.n_features = static_cast<uint32_t>(nf);
    h.n_parts = static_cast<uint32_t>(np);
    h.n_rows = info.n_rows;
    h.record_bytes = info.record_bytes;
    h.extra_bytes = info.extra_bytes;
    h.null_bytes = info.null_bytes;
    h.index_slots = info.index_slots;
    h.arena_bytes = info.arena_bytes;
    h.key_bytes = info.key_bytes;
    h.prefix_bytes = info.key_prefix.size();
    if (fdatasync(fd) != 0) fail("cannot sync generation file");
    {  // The body checksum, read back from the page cache through a mapping.
        Mapping m;
        void* p = mmap(nullptr, at, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) fail("cannot map generation file");
        m.p = static_cast<const uint8_t*>(p);
        m.n = at;
        h.body_crc = body_checksum(m.p + hb, at - hb);
    }
    std::memcpy(header.data(), &h, sizeof h);
    const size_t types_at = sizeof h + sizeof(RawPart) * np;
    size_t j = 0;
    for (size_t k = 0; k < np; ++k) {
        const RowLayout& schema = *schemas[k];
        RawPart p{};
        p.schema_fingerprint = schema.fingerprint();
        p.n_features = static_cast<uint32_t>(schema.n_features());
        p.offset = info.parts[k].offset;
        p.extra_bytes = info.parts[k].extra_bytes;
        p.null_bytes = info.parts[k].null_bytes;
        p.null_offset = info.parts[k].null_offset;
        std::memcpy(header.data() + sizeof h + k * sizeof p, &p, sizeof p);
        for (size_t f = 0; f < schema.n_features(); ++f, ++j) {
            const uint32_t dim = schema.dims()[f];
            header[types_at + j] = schema.dtypes()[f];
            std::memcpy(header.data() + types_at + nf + 4 * j, &dim, 4);
        }
    }
    std::memcpy(header.data() + types_at + 5 * nf, info.key_prefix.data(), info.key_prefix.size());
    h.header_crc = header_checksum(header.data(), hb);
    std::memcpy(header.data() + kHeaderCrcAt, &h.header_crc, 4);
    if (::pwrite(fd, header.data(), hb, 0) != static_cast<ssize_t>(hb)) fail("cannot write generation header");
    if (::fsync(fd) != 0) fail("cannot sync generation file");
    ::close(fd);
}

std::shared_ptr<const Generation> Generation::adopt(const std::string& path, const uint8_t* base, size_t size) {
    const RawHeader h = check_header(path, base, size);
    std::shared_ptr<Generation> g(new Generation());
    g->path_ = path;
    g->info_ = info_of(h, base);
    g->n_features_ = h.n_features;
    g->header_bytes_ = h.header_bytes;
    std::memcpy(g->offsets_, h.section_offset, sizeof g->offsets_);
    g->body_crc_ = h.body_crc;
    g->base_ = base;
    g->size_ = size;
    return g;
}

std::shared_ptr<const Generation> Generation::map(const std::string& path) {
    if (auto g = verified_mapping(path)) return g;
    Mapping m;
    const FileId id = map_file(path, m, true);
    std::shared_ptr<const Generation> g = adopt(path, m.p, m.n);
    m.p = nullptr;  // owned by the Generation now
    if (body_checksum(g->base_ + g->header_bytes_, g->size_ - g->header_bytes_) != g->body_crc_)
        throw GenerationError("generation file " + path +
                              " is refused: body checksum mismatch (corrupt); rebuild it (featurecore snapshot build)");
    remember_verified(path, id, g);
    return g;
}

std::shared_ptr<const Generation> Generation::open(const std::string& path, const RowLayout& schema, bool verify_body,
                                                   size_t part) {
    std::shared_ptr<const Generation> g = verify_body ? map(path) : verified_mapping(path);
    if (!g) {
        Mapping m;
        map_file(path, m, false);
        g = adopt(path, m.p, m.n);
        m.p = nullptr;
    }
    auto bad = [&](const std::string& why) {
        return GenerationError("generation file " + path + " is refused: " + why +
                               "; rebuild it (featurecore snapshot build)");
    };
    const std::vector<GenerationPart>& parts = g->info_.parts;
    if (part >= parts.size())
        throw bad("it holds " + std::to_string(parts.size()) + " part(s), not part " + std::to_string(part));
    const GenerationPart& p = parts[part];
    size_t before = 0;  // features of the parts before `part`
    for (size_t k = 0; k < part; ++k) before += parts[k].n_features;
    const size_t nf = schema.n_features();
    const uint8_t* types = g->base_ + sizeof(RawHeader) + sizeof(RawPart) * parts.size();
    bool same = p.n_features == nf && p.schema_fingerprint == schema.fingerprint();
    for (size_t j = 0; same && j < nf; ++j) {
        uint32_t dim;
        std::memcpy(&dim, types + g->n_features_ + 4 * (before + j), 4);
        same = types[before + j] == schema.dtypes()[j] && dim == schema.dims()[j];
    }
    if (!same)
        throw bad("it holds another schema (fingerprint " + std::to_string(p.schema_fingerprint) +
                  ", the group's is " + std::to_string(schema.fingerprint()) + ")");
    if (p.null_bytes != 0 && p.null_bytes != schema.bitmap_bytes()) throw bad("bad null bitmap size");
    return g;
}

GenerationInfo Generation::verify(const std::string& path) {
    Mapping m;
    map_file(path, m, true);
    const RawHeader h = check_header(path, m.p, m.n);
    if (body_checksum(m.p + h.header_bytes, h.file_bytes - h.header_bytes) != h.body_crc)
        throw GenerationError("generation file " + path +
                              " is refused: body checksum mismatch (corrupt); rebuild it (featurecore snapshot build)");
    return info_of(h, m.p);
}

Generation::~Generation() {
    if (base_) munmap(const_cast<uint8_t*>(base_), size_);
}

}  // namespace fc
