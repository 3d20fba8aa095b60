// Definitions of csrc/bind_helpers.h.
#include "bind_helpers.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "keys.h"

namespace fc::bind {

std::string type_name(py::handle obj) { return std::string(py::str(py::type::of(obj).attr("__name__"))); }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string want_str(std::initializer_list<py::ssize_t> shape) {
    std::string s = "(";
    size_t d = 0;
    for (py::ssize_t extent : shape) s += (d++ ? ", " : "") + (extent < 0 ? std::string("*") : std::to_string(extent));
    return s + (shape.size() == 1 ? ",)" : ")");
}

const char* const kIdForms =
    "a list of str, a 1-d numpy array of int64, fixed-width bytes (dtype 'S<n>') or fixed-width str ('U<n>'), "
    "or a pyarrow StringArray / LargeStringArray";

namespace {

std::string at(const NameFn& name, size_t i) { return name() + "[" + std::to_string(i) + "]"; }

// Whether p[0, n) is all ASCII, eight bytes at a time.
bool all_ascii(const char* p, size_t n) {
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; ++i) acc |= static_cast<uint8_t>(p[i]);
    return (acc & 0x8080808080808080ULL) == 0;
}

// Packed ids are bytes; the list path's are str, so every id must be UTF-8 for the
// same text to name the same entity either way.
void check_utf8(const char* text, const uint64_t* offs, size_t n, const NameFn& name) {
    if (n == 0 || all_ascii(text + offs[0], offs[n] - offs[0])) return;
    for (size_t i = 0; i < n; ++i)
        if (!fc::valid_utf8(reinterpret_cast<const uint8_t*>(text + offs[i]), offs[i + 1] - offs[i]))
            throw std::invalid_argument(at(name, i) + " is not valid UTF-8; ids are UTF-8 text: decode the "
                                        "source bytes with errors='replace' or pass the id as its hex text");
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

}  // namespace

void packed_array_ids(const py::array& a, const NameFn& name, IdsArg& out, std::vector<py::object>& keep) {
    const char kind = a.dtype().kind();
    if (kind != 'S' && kind != 'U')
        throw std::invalid_argument(name() + " must be " + kIdForms + ", got a numpy array of " +
                                    std::string(py::str(a.dtype())) + " " + shape_str(a) +
                                    "; convert with np.ascontiguousarray(ids, dtype=np.int64) (integer ids) or "
                                    "[str(i) for i in ids]");
    if (a.ndim() != 1 || !(a.flags() & py::array::c_style))
        throw std::invalid_argument(name() + " must be a 1-d C-contiguous numpy array, got " +
                                    std::string(py::str(a.dtype())) + " " + shape_str(a) +
                                    (a.ndim() == 1 ? " (a strided view)" : "") +
                                    "; pass np.ascontiguousarray(ids).ravel()");
    const size_t n = static_cast<size_t>(a.shape(0));
    const size_t width = static_cast<size_t>(a.itemsize());
    const char* base = static_cast<const char*>(a.data());
    out.offsets.resize(n + 1);
    out.offsets[0] = 0;
    if (kind == 'S') {  // bytes, as numpy reads them: trailing NULs stripped
        size_t i = 0;
        while (i < n && width && base[i * width + width - 1] != '\0') ++i;
        if (i == n) {  // every id fills its width (UUIDs in S36): read in place
            for (size_t j = 0; j <= n; ++j) out.offsets[j] = j * width;
            out.col.text = width ? base : "";
            out.col.offsets = out.offsets.data();
            out.col.n = n;
            keep.push_back(a);
            check_utf8(out.col.text, out.col.offsets, n, name);
            return;
        }
        out.text.reserve(n * width);
        for (size_t i = 0; i < n; ++i) {
            const char* p = base + i * width;
            size_t len = width;
            while (len && p[len - 1] == '\0') --len;
            out.text.append(p, len);
            out.offsets[i + 1] = out.text.size();
        }
        check_utf8(out.text.data(), out.offsets.data(), n, name);
    } else {  // UCS-4 code points, trailing NULs stripped, to UTF-8
        const char order = a.dtype().byteorder();
        const bool swap = order == (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<');
        if (swap)
            throw std::invalid_argument(name() + " must hold its str in native byte order, got " +
                                        std::string(py::str(a.dtype())) + "; convert with ids.astype('=U" +
                                        std::to_string(width / 4) + "')");
        const size_t chars = width / 4;
        out.text.reserve(n * chars);
        for (size_t i = 0; i < n; ++i) {
            const char* p = base + i * width;
            auto cp_at = [p](size_t k) {
                uint32_t cp;
                std::memcpy(&cp, p + 4 * k, 4);
                return cp;
            };
            size_t len = chars;
            while (len && cp_at(len - 1) == 0) --len;
            const size_t start = out.text.size();
            out.text.resize(start + len);
            char* dst = &out.text[start];
            uint32_t acc = 0;
            for (size_t k = 0; k < len; ++k) {  // ASCII, the common case
                const uint32_t cp = cp_at(k);
                acc |= cp;
                dst[k] = static_cast<char>(cp);
            }
            if (acc >= 0x80) {
                out.text.resize(start);
                for (size_t k = 0; k < len; ++k) {
                    const uint32_t cp = cp_at(k);
                    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
                    {
                        char hex[16];
                        std::snprintf(hex, sizeof hex, "U+%04X", cp);
                        throw std::invalid_argument(at(name, i) + " is not valid Unicode text (" + hex +
                                                    " is a lone surrogate or beyond U+10FFFF); pass ids that encode "
                                                    "as UTF-8");
                    }
                    append_utf8(out.text, cp);
                }
            }
            out.offsets[i + 1] = out.text.size();
        }
    }
    out.col.text = out.text.data();
    out.col.offsets = out.offsets.data();
    out.col.n = n;
}

bool arrow_ids(py::handle ids, const NameFn& name, IdsArg& out, std::vector<py::object>& keep) {
    // Recognised by type name: the serving path never imports pyarrow.
    const std::string_view type = Py_TYPE(ids.ptr())->tp_name;
    if (type.substr(0, 8) != "pyarrow.") return false;
    const bool large = type == "pyarrow.lib.LargeStringArray";
    if (!large && type != "pyarrow.lib.StringArray")
        throw std::invalid_argument(name() + " must be " + kIdForms + ", got a " + std::string(type) +
                                    "; pass ids.cast(pyarrow.string()) (a ChunkedArray: ids.combine_chunks(); "
                                    "integer ids: ids.to_numpy())");
    const size_t n = py::len(ids);
    const size_t off = ids.attr("offset").cast<size_t>();
    const py::list buffers = ids.attr("buffers")();
    auto malformed = [&](const std::string& what) {
        return std::invalid_argument(name() + " is a malformed pyarrow array (" + what +
                                     "); rebuild it with pyarrow.array(ids, pyarrow.string())");
    };
    if (buffers.size() != 3) throw malformed(std::to_string(buffers.size()) + " buffers, not 3");
    if (n > 0 && !buffers[0].is_none() && ids.attr("null_count").cast<int64_t>() > 0) {
        const py::buffer_info valid = py::buffer(buffers[0]).request();
        const auto* bits = static_cast<const uint8_t*>(valid.ptr);
        for (size_t i = 0; i < n; ++i) {
            const size_t b = off + i;
            if (!((bits[b >> 3] >> (b & 7)) & 1))
                throw std::invalid_argument(at(name, i) + " is null; every candidate needs an id (an empty string "
                                            "names no entity and is served not_applicable): fill the nulls first, "
                                            "e.g. pyarrow.compute.fill_null(ids, '')");
        }
    }
    out.offsets.clear();
    out.col.n = n;
    if (n == 0) {
        out.offsets.push_back(0);
        out.col.text = "";
        out.col.offsets = out.offsets.data();
        return true;
    }
    const py::buffer_info ob = py::buffer(buffers[1]).request();
    const size_t osize = static_cast<size_t>(ob.size * ob.itemsize);
    const size_t ow = large ? 8 : 4;
    if (osize < (off + n + 1) * ow) throw malformed("its offsets buffer is too short");
    const char* data = "";
    size_t dsize = 0;
    if (!buffers[2].is_none()) {
        const py::buffer_info db = py::buffer(buffers[2]).request();
        data = static_cast<const char*>(db.ptr);
        dsize = static_cast<size_t>(db.size * db.itemsize);
    }
    auto check = [&](const auto* o) {
        if (o[0] < 0 || static_cast<uint64_t>(o[n]) > dsize) throw malformed("offsets outside its data buffer");
        for (size_t i = 0; i < n; ++i)
            if (o[i + 1] < o[i]) throw malformed("offsets not ascending");
    };
    if (large) {  // int64 offsets: read in place
        const auto* o = static_cast<const int64_t*>(ob.ptr) + off;
        check(o);
        out.col.offsets = reinterpret_cast<const uint64_t*>(o);
    } else {  // int32 offsets, widened (the data is still read in place)
        const auto* o = static_cast<const int32_t*>(ob.ptr) + off;
        check(o);
        out.offsets.assign(o, o + n + 1);
        out.col.offsets = out.offsets.data();
    }
    out.col.text = data;
    keep.push_back(py::reinterpret_borrow<py::object>(ids));  // holds its buffers
    check_utf8(out.col.text, out.col.offsets, n, name);
    return true;
}

namespace {

template <typename T>
const void* column_ptr(py::handle col, const std::string& name, std::initializer_list<py::ssize_t> shape,
                       std::vector<py::object>& keep) {
    auto a = need<T>(col, name, shape);
    keep.push_back(a);
    return a.data();
}

}  // namespace

ColumnsArg columns_arg(const RowLayout& s, const py::sequence& columns, py::handle nulls, py::handle generated_at,
                       py::handle feature_ts, py::handle published_at) {
    ColumnsArg out;
    const size_t k = s.n_features();
    if (static_cast<size_t>(py::len(columns)) != k)
        throw std::invalid_argument("columns has " + std::to_string(py::len(columns)) + " arrays but the schema has " +
                                    std::to_string(k) + " features; pass one array per feature in schema order");
    auto ga = need<int64_t>(generated_at, "generated_at", {-1});
    const py::ssize_t n = ga.shape(0);
    out.in.n = static_cast<size_t>(n);
    out.keep.push_back(ga);
    out.in.generated_at = ga.data();
    if (!feature_ts.is_none()) {
        auto ts = need<int64_t>(feature_ts, "feature_ts", {n});
        out.keep.push_back(ts);
        out.in.feature_ts = ts.data();
    }
    if (!published_at.is_none()) {
        auto pa = need<int64_t>(published_at, "published_at", {n});
        out.keep.push_back(pa);
        out.in.published_at = pa.data();
    }
    if (!nulls.is_none()) {
        auto nl = need<uint8_t>(nulls, "nulls", {n, static_cast<py::ssize_t>(k)});
        out.keep.push_back(nl);
        out.in.nulls = nl.data();
    }
    for (size_t j = 0; j < k; ++j) {
        const std::string name = "columns[" + std::to_string(j) + "]";
        py::handle c = columns[j];
        const void* p = nullptr;
        switch (s.dtypes()[j]) {
            case fc::kFloat32: p = column_ptr<float>(c, name, {n}, out.keep); break;
            case fc::kFloat64: p = column_ptr<double>(c, name, {n}, out.keep); break;
            case fc::kInt64: p = column_ptr<int64_t>(c, name, {n}, out.keep); break;
            case fc::kBool: p = column_ptr<bool>(c, name, {n}, out.keep); break;
            case fc::kCategorical: p = column_ptr<int32_t>(c, name, {n}, out.keep); break;
            case fc::kEmbedding:
                p = column_ptr<float>(c, name, {n, static_cast<py::ssize_t>(s.dims()[j])}, out.keep);
                break;
        }
        out.in.values.push_back(p);
    }
    return out;
}

BytesList bytes_list(const py::sequence& seq, const char* name, bool allow_absent) {
    BytesList out;
    out.keep = py::reinterpret_steal<py::tuple>(PySequence_Tuple(seq.ptr()));
    if (!out.keep) throw py::error_already_set();
    const size_t n = out.keep.size();
    out.views.resize(n);
    out.absent.assign(n, fc::kPresent);
    for (size_t i = 0; i < n; ++i) {
        PyObject* item = PyTuple_GET_ITEM(out.keep.ptr(), static_cast<Py_ssize_t>(i));
        if (PyBytes_Check(item)) {
            out.views[i] = {PyBytes_AS_STRING(item), static_cast<size_t>(PyBytes_GET_SIZE(item))};
            continue;
        }
        py::handle h(item);
        if (allow_absent && h.is_none()) {
            out.absent[i] = fc::kEntityNotFound;
        } else if (allow_absent && py::isinstance<py::int_>(h) && h.cast<long>() > fc::kPresent &&
                   h.cast<long>() < fc::kNumReasons) {
            out.absent[i] = static_cast<uint8_t>(h.cast<long>());
        } else {
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) + "] must be bytes" +
                                        (allow_absent ? ", None or a missing-reason code 1..7" : "") + ", got " +
                                        type_name(h) + " " +
                                        std::string(py::repr(h)).substr(0, 40));
        }
    }
    return out;
}

TablePtr decode_table(const RowLayoutPtr& schema, const BytesList& rows) {
    auto t = std::make_shared<GroupTable>(schema, rows.views.size());
    py::gil_scoped_release release;
    for (size_t i = 0; i < rows.views.size(); ++i) {
        const auto& v = rows.views[i];
        if (v.data() != nullptr)
            t->decode_into(i, reinterpret_cast<const uint8_t*>(v.data()), v.size());
        else if (rows.absent[i] != fc::kEntityNotFound)
            t->set_missing(i, rows.absent[i]);
    }
    return t;
}

std::string id_text(py::handle id, const char* name) {
    if (py::isinstance<py::str>(id)) return id.cast<std::string>();
    if (py::isinstance<py::int_>(id) && !py::isinstance<py::bool_>(id)) {
        std::string s;
        fc::append_int_id(s, id.cast<int64_t>());
        return s;
    }
    throw std::invalid_argument(std::string(name) + " must be str or int, got " +
                                type_name(id));
}

}  // namespace fc::bind
