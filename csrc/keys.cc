#include "keys.h"

#include <charconv>
#include <cstring>
#include <stdexcept>

namespace fc {
namespace {

inline uint64_t mix(uint64_t a, uint64_t b) {
    const __uint128_t r = static_cast<__uint128_t>(a) * b;
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

inline uint64_t load64(const char* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

inline uint64_t load32(const char* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

void check_label(std::string_view s, const char* what) {
    if (s.size() > kMaxNameBytes)
        throw std::invalid_argument(std::string(what) + " is " + std::to_string(s.size()) + " bytes long; keys allow at most " +
                                    std::to_string(kMaxNameBytes) + " UTF-8 bytes, use a shorter name");
}

}  // namespace

void append_key_prefix(std::string& out, std::string_view tenant, std::string_view entity_type) {
    check_label(tenant, "tenant");
    check_label(entity_type, "entity_type");
    out.push_back(kKeyFormat);
    out.push_back(static_cast<char>(tenant.size()));
    out.append(tenant);
    out.push_back(static_cast<char>(entity_type.size()));
    out.append(entity_type);
}

std::string encode_key(std::string_view tenant, std::string_view entity_type, std::string_view id) {
    std::string out;
    out.reserve(3 + tenant.size() + entity_type.size() + id.size());
    append_key_prefix(out, tenant, entity_type);
    out.append(id);
    return out;
}

void append_int_id(std::string& out, int64_t v) {
    char buf[24];
    const auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, res.ptr);
}

void append_pair_component(std::string& out, std::string_view component) {
    append_int_id(out, static_cast<int64_t>(component.size()));
    out.push_back(':');
    out.append(component);
}

std::string pair_id(const std::vector<std::string_view>& components) {
    if (components.size() < 2)
        throw std::invalid_argument("pair_id needs at least 2 component ids, got " +
                                    std::to_string(components.size()));
    std::string out;
    for (size_t i = 0; i + 1 < components.size(); ++i) append_pair_component(out, components[i]);
    out.append(components.back());
    return out;
}

void join_pair_ids(const std::vector<TextColumn>& components, std::string& data, int64_t* offsets) {
    if (components.size() < 2)
        throw std::invalid_argument("join_pair_ids needs at least 2 component columns, got " +
                                    std::to_string(components.size()));
    const size_t n = components[0].n;
    for (const TextColumn& c : components)
        if (c.n != n)
            throw std::invalid_argument("join_pair_ids: component columns differ in length (" + std::to_string(c.n) +
                                        " vs " + std::to_string(n) + ")");
    offsets[0] = 0;
    for (size_t i = 0; i < n; ++i) {
        for (size_t c = 0; c < components.size(); ++c) {
            const TextColumn& col = components[c];
            const std::string_view text(col.data + col.offsets[i], static_cast<size_t>(col.offsets[i + 1] - col.offsets[i]));
            if (c + 1 < components.size())
                append_pair_component(data, text);
            else
                data.append(text);
        }
        offsets[i + 1] = static_cast<int64_t>(data.size());
    }
}

bool split_pair_id(std::string_view id, size_t n_components, size_t* begin, size_t* length) {
    if (n_components < 2) return false;
    size_t pos = 0;
    for (size_t c = 0; c + 1 < n_components; ++c) {
        // "<decimal byte length>:" (at most 12 digits: longer is malformed and would overflow).
        uint64_t len = 0;
        size_t digits = 0;
        while (pos + digits < id.size() && digits <= 12 && id[pos + digits] >= '0' && id[pos + digits] <= '9') {
            len = len * 10 + static_cast<uint64_t>(id[pos + digits] - '0');
            ++digits;
        }
        if (digits == 0 || digits > 12 || pos + digits >= id.size() || id[pos + digits] != ':') return false;
        pos += digits + 1;
        if (len > id.size() - pos) return false;
        begin[c] = pos;
        length[c] = static_cast<size_t>(len);
        pos += static_cast<size_t>(len);
    }
    begin[n_components - 1] = pos;
    length[n_components - 1] = id.size() - pos;
    return true;
}

uint64_t hash_bytes(const char* p, size_t n) {
    constexpr uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull, k2 = 0x8ebc6af09c88c6e3ull;
    uint64_t h = k0 ^ mix(n ^ k1, k2);
    const char* q = p;
    size_t left = n;
    while (left > 16) {
        h = mix(load64(q) ^ k1, load64(q + 8) ^ h);
        q += 16;
        left -= 16;
    }
    uint64_t a = 0, b = 0;
    if (left >= 8) {
        a = load64(q);
        b = load64(q + left - 8);
    } else if (left >= 4) {
        a = load32(q);
        b = load32(q + left - 4);
    } else if (left > 0) {
        a = (static_cast<uint64_t>(static_cast<uint8_t>(q[0])) << 16) |
            (static_cast<uint64_t>(static_cast<uint8_t>(q[left / 2])) << 8) | static_cast<uint8_t>(q[left - 1]);
    }
    return mix(k1 ^ n, mix(a ^ k1, b ^ h));
}

size_t key_prefix_length(const char* key, size_t len) {
    if (len < 3 || key[0] != kKeyFormat) return 0;
    const size_t t = static_cast<uint8_t>(key[1]);
    if (2 + t >= len) return 0;
    const size_t e = static_cast<uint8_t>(key[2 + t]);
    const size_t p = 3 + t + e;
    return p <= len ? p : 0;
}

namespace {
inline uint64_t hash_int_inline(uint64_t prefix_hash, int64_t v) {
    constexpr uint64_t k1 = 0xe7037ed1a0b428dbull, k2 = 0x8ebc6af09c88c6e3ull;
    return mix(prefix_hash ^ k1, mix(static_cast<uint64_t>(v) ^ k2, k1));
}
}  // namespace

uint64_t hash_id_int(uint64_t prefix_hash, int64_t v) { return hash_int_inline(prefix_hash, v); }

void hash_ids_int(uint64_t prefix_hash, const int64_t* v, size_t n, uint64_t* out) {
    for (size_t i = 0; i < n; ++i) out[i] = hash_int_inline(prefix_hash, v[i]);
}

bool parse_int_id(const char* id, size_t len, int64_t& out) {
    // Canonical decimal of a non-negative int64: 1..19 digits, no leading zero.
    if (len < 1 || len > 19 || (len > 1 && id[0] == '0')) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; ++i) {
        const unsigned d = static_cast<unsigned char>(id[i]) - '0';
        if (d > 9) return false;
        v = v * 10 + d;  // 19 digits fit in uint64
    }
    if (v > static_cast<uint64_t>(INT64_MAX)) return false;
    out = static_cast<int64_t>(v);
    return true;
}

uint64_t hash_id_text(uint64_t prefix_hash, const char* id, size_t len) {
    int64_t v;
    if (parse_int_id(id, len, v)) return hash_id_int(prefix_hash, v);
    constexpr uint64_t k0 = 0xa0761d6478bd642full;
    return mix(prefix_hash ^ k0, hash_bytes(id, len) ^ 0x8ebc6af09c88c6e3ull);
}

uint64_t hash_key(const char* key, size_t len) {
    const size_t p = key_prefix_length(key, len);
    if (p == 0) return hash_bytes(key, len);
    return hash_id_text(hash_bytes(key, p), key + p, len - p);
}

bool valid_utf8(const uint8_t* p, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

}  // namespace fc
