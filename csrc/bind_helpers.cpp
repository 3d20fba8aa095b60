// Definitions of csrc/bind_helpers.h.
#include "bind_helpers.h"

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
