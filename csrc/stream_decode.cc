// See stream_decode.h. A message is parsed into the output vectors directly; a message
// that leaves the accepted shape anywhere is rolled back to the sizes it started at.
#include "stream_decode.h"

#include "keys.h"
#include "resident.h"

#include <cstring>
#include <limits>
#include <string_view>

namespace fc {

namespace {

// The longest entity id in UTF-8 bytes (featurecore/online/batch.py MAX_ID_BYTES): the
// key limit less the longest prefix.
constexpr size_t kMaxIdBytes = ResidentGroup::kMaxKey - 3 - 2 * kMaxNameBytes;

class Reader {
  public:
    Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
    bool done() const { return p_ == end_; }
    bool peek(uint8_t& b) const {
        if (p_ == end_) return false;
        b = *p_;
        return true;
    }
    // A map or array header: its length.
    bool map_header(uint32_t& n) { return header(n, 0x80, 0xde); }
    bool array_header(uint32_t& n) { return header(n, 0x90, 0xdc); }
    // A str: its bytes (valid UTF-8 checked by the caller where it matters).
    bool str(std::string_view& out) {
        uint8_t b;
        if (!take(b)) return false;
        uint32_t n;
        if ((b & 0xe0) == 0xa0) {
            n = b & 0x1f;
        } else if (b == 0xd9) {
            if (!be(n, 1)) return false;
        } else if (b == 0xda) {
            if (!be(n, 2)) return false;
        } else if (b == 0xdb) {
            if (!be(n, 4)) return false;
        } else {
            return false;
        }
        if (static_cast<size_t>(end_ - p_) < n) return false;
        out = std::string_view(reinterpret_cast<const char*>(p_), n);
        p_ += n;
        return true;
    }
    // An int that fits in int64.
    bool int64(int64_t& out) {
        uint8_t b;
        if (!take(b)) return false;
        if (b <= 0x7f) {
            out = b;
            return true;
        }
        if (b >= 0xe0) {
            out = static_cast<int8_t>(b);
            return true;
        }
        uint32_t width;
        bool is_signed;
        switch (b) {
            case 0xcc: width = 1, is_signed = false; break;
            case 0xcd: width = 2, is_signed = false; break;
            case 0xce: width = 4, is_signed = false; break;
            case 0xcf: width = 8, is_signed = false; break;
            case 0xd0: width = 1, is_signed = true; break;
            case 0xd1: width = 2, is_signed = true; break;
            case 0xd2: width = 4, is_signed = true; break;
            case 0xd3: width = 8, is_signed = true; break;
            default: return false;
        }
        uint64_t v;
        if (!be64(v, width)) return false;
        if (!is_signed) {
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
            out = static_cast<int64_t>(v);
        } else if (width == 8) {
            out = static_cast<int64_t>(v);
        } else {  // sign-extend
            const unsigned shift = 64 - 8 * width;
            out = static_cast<int64_t>(v << shift) >> shift;
        }
        return true;
    }
    // A float32/float64, or an int (as a Python int converted by numpy to float64).
    bool number(double& out) {
        uint8_t b;
        if (!peek(b)) return false;
        if (b == 0xca) {
            ++p_;
            uint64_t v;
            if (!be64(v, 4)) return false;
            const uint32_t bits = static_cast<uint32_t>(v);
            float f;
            std::memcpy(&f, &bits, 4);
            out = f;
            return true;
        }
        if (b == 0xcb) {
            ++p_;
            uint64_t v;
            if (!be64(v, 8)) return false;
            std::memcpy(&out, &v, 8);
            return true;
        }
        int64_t i;
        if (!int64(i)) return false;
        out = static_cast<double>(i);
        return true;
    }
    bool boolean(uint8_t& out) {
        uint8_t b;
        if (!take(b) || (b != 0xc2 && b != 0xc3)) return false;
        out = b == 0xc3;
        return true;
    }

  private:
    bool take(uint8_t& b) {
        if (p_ == end_) return false;
        b = *p_++;
        return true;
    }
    bool be(uint32_t& out, uint32_t width) {
        uint64_t v;
        if (!be64(v, width)) return false;
        out = static_cast<uint32_t>(v);
        return true;
    }
    bool be64(uint64_t& out, uint32_t width) {
        if (static_cast<size_t>(end_ - p_) < width) return false;
        out = 0;
        for (uint32_t i = 0; i < width; ++i) out = (out << 8) | p_[i];
        p_ += width;
        return true;
    }
    bool header(uint32_t& n, uint8_t fix, uint8_t b16) {
        uint8_t b;
        if (!take(b)) return false;
        if ((b & 0xf0) == fix) {
            n = b & 0x0f;
            return true;
        }
        if (b == b16) return be(n, 2);
        if (b == b16 + 1) return be(n, 4);
        return false;
    }

    const uint8_t* p_;
    const uint8_t* end_;
};

// Sizes of the output vectors when a message started: restored when it is not accepted.
struct Mark {
    size_t rows;
    std::vector<size_t> floats, ints, bools, labels;
};

Mark mark(const StreamColumns& out) {
    Mark m;
    m.rows = out.feature_ts.size();
    for (const auto& c : out.floats) m.floats.push_back(c.size());
    for (const auto& c : out.ints) m.ints.push_back(c.size());
    for (const auto& c : out.bools) m.bools.push_back(c.size());
    for (const auto& c : out.labels) m.labels.push_back(c.size());
    return m;
}

void rollback(StreamColumns& out, const Mark& m) {
    out.ids.resize(m.rows);
    out.feature_ts.resize(m.rows);
    out.generated_at.resize(m.rows);
    for (size_t j = 0; j < out.floats.size(); ++j) out.floats[j].resize(m.floats[j]);
    for (size_t j = 0; j < out.ints.size(); ++j) out.ints[j].resize(m.ints[j]);
    for (size_t j = 0; j < out.bools.size(); ++j) out.bools[j].resize(m.bools[j]);
    for (size_t j = 0; j < out.labels.size(); ++j) out.labels[j].resize(m.labels[j]);
}

enum Key : unsigned { kEntity = 1, kTimestamp = 2, kGenerated = 4, kValues = 8, kTenant = 16 };

Key key_of(std::string_view k) {
    if (k == "entity_id") return kEntity;
    if (k == "feature_timestamp") return kTimestamp;
    if (k == "generated_at") return kGenerated;
    if (k == "values") return kValues;
    if (k == "tenant") return kTenant;
    return static_cast<Key>(0);
}

// One row (a map) into out; false when it is not in the accepted shape.
bool parse_row(Reader& in, const std::vector<std::string>& names, const std::string& kinds, int64_t published_us,
               std::string_view& tenant, bool& has_tenant, StreamColumns& out) {
    uint32_t n;
    if (!in.map_header(n)) return false;
    unsigned seen = 0;
    int64_t id_int = 0, ts = 0, generated = published_us;
    std::string_view id_text, row_tenant;
    bool id_is_int = false;
    for (uint32_t e = 0; e < n; ++e) {
        std::string_view k;
        if (!in.str(k)) return false;
        const Key key = key_of(k);
        if (key == 0 || (seen & key)) return false;  // unknown or repeated key
        seen |= key;
        switch (key) {
            case kEntity: {
                uint8_t b;
                if (!in.peek(b)) return false;
                if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb) {
                    if (!in.str(id_text) || id_text.empty() || id_text.size() > kMaxIdBytes ||
                        !valid_utf8(reinterpret_cast<const uint8_t*>(id_text.data()), id_text.size()))
                        return false;
                } else {
                    if (!in.int64(id_int) || id_int < 0) return false;
                    id_is_int = true;
                }
                break;
            }
            case kTimestamp:
                if (!in.int64(ts)) return false;
                break;
            case kGenerated:
                if (!in.int64(generated)) return false;
                break;
            case kTenant:
                if (!in.str(row_tenant)) return false;
                break;
            case kValues: {
                uint32_t k_cells;
                if (!in.map_header(k_cells) || k_cells != names.size()) return false;
                size_t fi = 0, ii = 0, bi = 0, ci = 0;
                for (size_t j = 0; j < names.size(); ++j) {
                    std::string_view name;
                    if (!in.str(name) || name != names[j]) return false;
                    switch (static_cast<StreamCell>(kinds[j])) {
                        case StreamCell::Float: {
                            double v;
                            if (!in.number(v)) return false;
                            out.floats[fi++].push_back(v);
                            break;
                        }
                        case StreamCell::Int: {
                            int64_t v;
                            if (!in.int64(v)) return false;
                            out.ints[ii++].push_back(v);
                            break;
                        }
                        case StreamCell::Bool: {
                            uint8_t v;
                            if (!in.boolean(v)) return false;
                            out.bools[bi++].push_back(v);
                            break;
                        }
                        case StreamCell::Label: {
                            uint8_t b;
                            std::string_view v;
                            if (!in.peek(b) || !((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb) || !in.str(v) ||
                                !valid_utf8(reinterpret_cast<const uint8_t*>(v.data()), v.size()))
                                return false;
                            out.labels[ci++].emplace_back(v);
                            break;
                        }
                    }
                }
                break;
            }
        }
    }
    if ((seen & (kEntity | kTimestamp | kValues)) != (kEntity | kTimestamp | kValues)) return false;
    const std::string_view this_tenant = (seen & kTenant) ? row_tenant : std::string_view("default");
    if (!has_tenant) {
        if (!valid_utf8(reinterpret_cast<const uint8_t*>(this_tenant.data()), this_tenant.size())) return false;
        tenant = this_tenant;
        has_tenant = true;
    } else if (this_tenant != tenant) {
        return false;  // one message, one tenant
    }
    if (id_is_int) {
        out.ids.emplace_back();
        append_int_id(out.ids.back(), id_int);
    } else {
        out.ids.emplace_back(id_text);
    }
    out.feature_ts.push_back(ts);
    out.generated_at.push_back(generated);
    return true;
}

// One payload; false (nothing appended) when it is not in the accepted shape.
bool parse_message(const StreamPayload& payload, const std::vector<std::string>& names, const std::string& kinds,
                   int64_t published_us, StreamColumns& out, std::string& tenant_out, int64_t& rows) {
    Reader in(payload.data, payload.size);
    uint8_t b;
    if (!in.peek(b)) return false;
    uint32_t count = 1;
    const bool list = (b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd;
    if (list && (!in.array_header(count) || count == 0)) return false;
    std::string_view tenant;
    bool has_tenant = false;
    for (uint32_t r = 0; r < count; ++r)
        if (!parse_row(in, names, kinds, published_us, tenant, has_tenant, out)) return false;
    if (!in.done()) return false;  // trailing bytes: the Python decoder refuses them
    tenant_out.assign(tenant);
    rows = count;
    return true;
}

}  // namespace

StreamColumns decode_stream_payloads(const std::vector<StreamPayload>& payloads, const std::vector<std::string>& names,
                                     const std::string& kinds, int64_t published_us) {
    StreamColumns out;
    size_t nf = 0, ni = 0, nb = 0, nc = 0;
    for (char k : kinds) {
        nf += k == 'f';
        ni += k == 'i';
        nb += k == 'b';
        nc += k == 'c';
    }
    out.floats.resize(nf);
    out.ints.resize(ni);
    out.bools.resize(nb);
    out.labels.resize(nc);
    out.accepted.assign(payloads.size(), 0);
    out.rows.assign(payloads.size(), 0);
    out.tenants.resize(payloads.size());
    for (size_t m = 0; m < payloads.size(); ++m) {
        const Mark before = mark(out);
        if (parse_message(payloads[m], names, kinds, published_us, out, out.tenants[m], out.rows[m])) {
            out.accepted[m] = 1;
        } else {
            rollback(out, before);
            out.rows[m] = 0;
            out.tenants[m].clear();
        }
    }
    return out;
}

}  // namespace fc
