#include "codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace fc {
namespace {

const uint32_t* crc_table() {
    static const auto table = [] {
        static uint32_t t[256];
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    return table;
}

const uint32_t* crc32c_table() {
    static const auto table = [] {
        static uint32_t t[256];
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    return table;
}

uint32_t crc32c_table_driven(const uint8_t* data, size_t n, uint32_t crc) {
    const uint32_t* t = crc32c_table();
    for (size_t i = 0; i < n; ++i) crc = t[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// The SSE4.2 crc32 instruction computes CRC-32C; compiled for it here only, chosen at run
// time, so the extension still runs on CPUs without it (no -march=native).
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* data, size_t n, uint32_t crc) {
    uint64_t c = crc;
    for (; n >= 8; n -= 8, data += 8) {
        uint64_t v;
        std::memcpy(&v, data, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = static_cast<uint32_t>(c);
    for (; n > 0; --n, ++data) c32 = __builtin_ia32_crc32qi(c32, *data);
    return c32;
}

bool have_sse42() {
    static const bool have = __builtin_cpu_supports("sse4.2");
    return have;
}
#endif

// Little-endian loads/stores; the format is little-endian on every host.
template <typename T>
T load_le(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

template <typename T>
void store_le(uint8_t* p, T v) {
    std::memcpy(p, &v, sizeof(T));
}

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE floats expected");

}  // namespace

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
    const uint32_t* t = crc_table();
    crc = ~crc;
    for (size_t i = 0; i < n; ++i) crc = t[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc) {
    crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_sse42()) return ~crc32c_sse42(data, n, crc);
#endif
    return ~crc32c_table_driven(data, n, crc);
}

RowLayout::RowLayout(std::vector<uint8_t> dtypes, std::vector<uint32_t> dims)
    : dtypes_(std::move(dtypes)), dims_(std::move(dims)) {
    if (dtypes_.size() != dims_.size())
        throw std::invalid_argument("RowLayout: dtypes has " + std::to_string(dtypes_.size()) +
                                    " entries but dims has " + std::to_string(dims_.size()) +
                                    "; pass one dim per feature (1 unless embedding)");
    if (dtypes_.size() > 65535)
        throw std::invalid_argument("RowLayout: " + std::to_string(dtypes_.size()) +
                                    " features exceed the row format's 65535; split the group");
    slot_offsets_.assign(1, 0);
    std::vector<uint8_t> fp;  // dtype u8 + dim u32le per feature
    row_bytes_ = kHeaderBytes + bitmap_bytes();
    for (size_t j = 0; j < dtypes_.size(); ++j) {
        const uint8_t dt = dtypes_[j];
        const uint32_t dim = dims_[j];
        if (dt >= kNumDTypes)
            throw std::invalid_argument("RowLayout: feature " + std::to_string(j) + " has dtype code " +
                                        std::to_string(dt) + "; use 0..5 (float32, float64, int64, "
                                        "bool, categorical, embedding)");
        if (dt == kEmbedding ? dim == 0 || dim > (1u << 20) : dim != 1)
            throw std::invalid_argument(
                "RowLayout: feature " + std::to_string(j) + " has dim " + std::to_string(dim) +
                (dt == kEmbedding ? "; an embedding needs 1..1048576 dims" : "; only embeddings have dim != 1"));
        const int64_t next = int64_t{slot_offsets_.back()} + dim;
        if (next > std::numeric_limits<int32_t>::max())
            throw std::invalid_argument("RowLayout: features 0.." + std::to_string(j) + " need " + std::to_string(next) +
                                        " float32 slots; a group holds at most 2147483647, split the group");
        slot_offsets_.push_back(static_cast<int32_t>(next));
        row_bytes_ += value_bytes(j);
        fp.push_back(dt);
        for (int b = 0; b < 4; ++b) fp.push_back(static_cast<uint8_t>(dim >> (8 * b)));
    }
    row_bytes_ += kChecksumBytes;
    fingerprint_ = crc32(fp.data(), fp.size());
}

size_t RowLayout::value_bytes(size_t j) const {
    switch (dtypes_[j]) {
        case kFloat64:
        case kInt64: return 8;
        case kBool: return 1;
        case kEmbedding: return 4 * static_cast<size_t>(dims_[j]);
        default: return 4;  // float32, categorical
    }
}

namespace {

template <typename T>
void cast_column(const void* col, size_t r0, size_t r1, float* out, size_t stride) {
    const T* c = static_cast<const T*>(col);
    for (size_t r = r0; r < r1; ++r, out += stride) out[0] = static_cast<float>(c[r]);
}

}  // namespace

void column_to_slots(const RowLayout& schema, const ColumnsIn& in, size_t j, size_t r0, size_t r1, float* out,
                     size_t stride) {
    const void* col = in.values[j];
    switch (schema.dtypes()[j]) {
        case kFloat32: cast_column<float>(col, r0, r1, out, stride); break;
        case kFloat64: cast_column<double>(col, r0, r1, out, stride); break;
        case kInt64: cast_column<int64_t>(col, r0, r1, out, stride); break;
        case kBool: {
            const auto* c = static_cast<const uint8_t*>(col);
            for (size_t r = r0; r < r1; ++r, out += stride) out[0] = c[r] ? 1.0f : 0.0f;
            break;
        }
        case kCategorical: cast_column<int32_t>(col, r0, r1, out, stride); break;
        case kEmbedding: {
            const size_t dim = schema.dims()[j];
            const float* c = static_cast<const float*>(col);
            for (size_t r = r0; r < r1; ++r, out += stride) std::memcpy(out, c + r * dim, dim * sizeof(float));
            break;
        }
    }
}

void encode_rows(const RowLayout& schema, const ColumnsIn& in, uint8_t* const* out) {
    const size_t k = schema.n_features();
    const size_t bitmap = schema.bitmap_bytes();
    // Rows go in blocks, and within a block feature by feature: each column is then
    // read sequentially and the block's rows stay in cache, where a row-by-row loop
    // would stream from all k columns at once (more streams than the prefetcher follows).
    constexpr size_t kBlock = 256;
    std::vector<size_t> value_off(k);
    size_t off = kHeaderBytes + bitmap;
    for (size_t j = 0; j < k; ++j) {
        value_off[j] = off;
        off += schema.value_bytes(j);
    }
    for (size_t r0 = 0; r0 < in.n; r0 += kBlock) {
        const size_t r1 = std::min(in.n, r0 + kBlock);
        for (size_t r = r0; r < r1; ++r) {
            uint8_t* p = out[r];
            std::memset(p, 0, kHeaderBytes + bitmap);
            p[0] = kFormatVersion;
            store_le<uint16_t>(p + 2, static_cast<uint16_t>(k));
            store_le<uint32_t>(p + 4, schema.fingerprint());
            store_le<int64_t>(p + 8, in.feature_ts[r]);
            store_le<int64_t>(p + 16, in.generated_at[r]);
            store_le<int64_t>(p + 24, in.published_at[r]);
        }
        for (size_t j = 0; j < k; ++j) {
            const size_t w = schema.value_bytes(j);
            const size_t vo = value_off[j];
            const auto* col = static_cast<const uint8_t*>(in.values[j]);
            switch (schema.dtypes()[j]) {
                case kBool:
                    for (size_t r = r0; r < r1; ++r) out[r][vo] = col[r] ? 1 : 0;
                    break;
                case kFloat32:
                case kCategorical:  // the common widths get a fixed-size copy
                    for (size_t r = r0; r < r1; ++r) std::memcpy(out[r] + vo, col + r * 4, 4);
                    break;
                case kFloat64:
                case kInt64:
                    for (size_t r = r0; r < r1; ++r) std::memcpy(out[r] + vo, col + r * 8, 8);
                    break;
                default:
                    for (size_t r = r0; r < r1; ++r) std::memcpy(out[r] + vo, col + r * w, w);
            }
            if (in.nulls == nullptr) continue;
            for (size_t r = r0; r < r1; ++r) {
                if (!in.nulls[r * k + j]) continue;
                out[r][kHeaderBytes + j / 8] |= static_cast<uint8_t>(1u << (j % 8));
                std::memset(out[r] + vo, 0, w);
            }
        }
        const size_t body = schema.row_bytes() - kChecksumBytes;
        for (size_t r = r0; r < r1; ++r) store_le<uint32_t>(out[r] + body, crc32c(out[r], body));
    }
}

bool row_checksum_ok(const uint8_t* data, size_t len) {
    if (data == nullptr || len == 0 || data[0] != kFormatVersion) return true;
    if (len < kHeaderBytes + kChecksumBytes) return false;
    return load_le<uint32_t>(data + len - kChecksumBytes) == crc32c(data, len - kChecksumBytes);
}

uint8_t decode_row(const RowLayout& schema, const uint8_t* data, size_t len, float* slots,
                   uint8_t* null_bits, int64_t* ts) {
    const size_t k = schema.n_features();
    if (data == nullptr || len < kHeaderBytes || data[1] != 0) return kNotComputed;
    if (data[0] == kFormatVersion && len == schema.row_bytes()) {
        const size_t body = len - kChecksumBytes;
        if (load_le<uint32_t>(data + body) != crc32c(data, body)) return kNotComputed;  // a damaged row
    } else if (!(data[0] == kFormatVersionV1 && len == schema.row_bytes() - kChecksumBytes)) {
        return kNotComputed;
    }
    if (load_le<uint16_t>(data + 2) != k || load_le<uint32_t>(data + 4) != schema.fingerprint())
        return kNotComputed;
    ts[0] = load_le<int64_t>(data + 8);
    ts[1] = load_le<int64_t>(data + 16);
    ts[2] = load_le<int64_t>(data + 24);
    const uint8_t* bits = data + kHeaderBytes;
    // Padding bits past n_features must be zero: a set one means a foreign row.
    if (k % 8 != 0 && (bits[k / 8] >> (k % 8)) != 0) return kNotComputed;
    if (k > 0) std::memcpy(null_bits, bits, schema.bitmap_bytes());  // (no bitmap buffer without features)
    const uint8_t* v = bits + schema.bitmap_bytes();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const auto& offs = schema.slot_offsets();
    for (size_t j = 0; j < k; ++j) {
        float* s = slots + offs[j];
        const uint8_t null = (bits[j / 8] >> (j % 8)) & 1;
        const size_t w = schema.value_bytes(j);
        if (null) {
            for (int32_t d = offs[j]; d < offs[j + 1]; ++d) slots[d] = nan;
        } else {
            switch (schema.dtypes()[j]) {
                case kFloat32: s[0] = load_le<float>(v); break;
                case kFloat64: s[0] = static_cast<float>(load_le<double>(v)); break;
                case kInt64: s[0] = static_cast<float>(load_le<int64_t>(v)); break;
                case kBool: s[0] = *v ? 1.0f : 0.0f; break;
                case kCategorical: s[0] = static_cast<float>(load_le<int32_t>(v)); break;
                case kEmbedding: std::memcpy(s, v, w); break;
            }
        }
        v += w;
    }
    return kPresent;
}

}  // namespace fc
