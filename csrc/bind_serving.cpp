// pybind11 glue for the serving core: keys, Schema, row codec, GroupTable,
// ResidentGroup, Plan, assemble and serve. Arguments are checked here (rank,
// dtype, shape, contiguity) with the GIL held; every per-row loop then runs in
// csrc/*.cc with the GIL released. Names match featurecore/_core.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "assembler.h"
#include "codec.h"
#include "generation.h"
#include "group_table.h"
#include "keys.h"
#include "reasons.h"
#include "resident.h"

namespace py = pybind11;
using fc::GroupTable;
using fc::Plan;
using fc::ResidentGroup;
using fc::Schema;

namespace {

using SchemaPtr = std::shared_ptr<Schema>;
using TablePtr = std::shared_ptr<GroupTable>;
using ResidentPtr = std::shared_ptr<ResidentGroup>;

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

template <typename T>
const char* dtype_name() {
    if (std::is_same<T, float>::value) return "float32";
    if (std::is_same<T, double>::value) return "float64";
    if (std::is_same<T, int64_t>::value) return "int64";
    if (std::is_same<T, int32_t>::value) return "int32";
    if (std::is_same<T, bool>::value) return "bool";
    return "uint8";
}

// Checks that obj is a C-contiguous T array of `shape` (-1 = any extent) and
// returns it; `writable` for outputs filled in place. Messages are only built
// on failure: this runs several times per request.
template <typename T>
py::array_t<T, py::array::c_style> need(py::handle obj, std::string_view name, std::initializer_list<py::ssize_t> shape,
                                        bool writable = false) {
    using Arr = py::array_t<T, py::array::c_style>;
    auto want = [&] {
        return std::string(name) + " must be a C-contiguous " + dtype_name<T>() + " array of shape " + want_str(shape);
    };
    if (!py::isinstance<py::array>(obj))
        throw std::invalid_argument(want() + ", got " + std::string(py::str(py::type::of(obj).attr("__name__"))) +
                                    "; pass a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(obj);
    bool ok = py::isinstance<Arr>(obj) && a.ndim() == static_cast<py::ssize_t>(shape.size());
    py::ssize_t d = 0;
    for (py::ssize_t extent : shape) {
        ok = ok && (extent < 0 || a.shape(d) == extent);
        ++d;
    }
    if (!ok)
        throw std::invalid_argument(want() + ", got " + std::string(py::str(a.dtype())) + " " + shape_str(a) +
                                    "; convert with np.ascontiguousarray(x, dtype=np." + dtype_name<T>() + ")");
    if (writable && !a.writeable())
        throw std::invalid_argument(std::string(name) + " must be writeable; pass a fresh np.empty array");
    return py::reinterpret_borrow<Arr>(obj);
}

// Typed columns of a batch, kept alive by `keep`.
struct ColumnsArg {
    fc::ColumnsIn in;
    std::vector<py::object> keep;
};

template <typename T>
const void* column_ptr(py::handle col, const std::string& name, std::initializer_list<py::ssize_t> shape,
                       std::vector<py::object>& keep) {
    auto a = need<T>(col, name, shape);
    keep.push_back(a);
    return a.data();
}

// Typed columns with their generated_at; the encoder also passes feature_ts and
// published_at (the other callers keep neither).
ColumnsArg columns_arg(const Schema& s, const py::sequence& columns, py::handle nulls, py::handle generated_at,
                       py::handle feature_ts = py::none(), py::handle published_at = py::none()) {
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

// Byte strings of a sequence, kept alive by `keep` (a tuple of the items: one
// C-level copy instead of a reference per item, and immune to the caller
// mutating a list while the GIL is released).
// With allow_absent, None (kEntityNotFound) or a reason code stands for a row
// without bytes; absent[i] holds its reason.
struct BytesList {
    std::vector<std::string_view> views;
    std::vector<uint8_t> absent;
    py::tuple keep;
};

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
                                        std::string(py::str(py::type::of(h).attr("__name__"))) + " " +
                                        std::string(py::repr(h)).substr(0, 40));
        }
    }
    return out;
}

// Decodes rows (absent rows get their reason) with the GIL released.
TablePtr decode_table(const SchemaPtr& schema, const BytesList& rows) {
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

// Ids of one role, copied out of Python objects with the GIL held.
// Holds no Python object, so serve can keep one per thread across calls
// (an int64 array is kept alive by the caller's `keep`).
struct IdsArg {
    std::string text;
    std::vector<uint64_t> offsets;
    fc::IdColumn col;
};

// `name()` builds the argument's name for a message (only on failure).
template <typename Name>
void ids_arg(py::handle ids, const Name& name, IdsArg& out, std::vector<py::object>& keep) {
    out.text.clear();
    out.offsets.clear();
    out.col = fc::IdColumn{};
    if (ids.is_none()) return;
    if (py::isinstance<py::array>(ids)) {
        using Ints = py::array_t<int64_t, py::array::c_style>;
        auto a = py::isinstance<Ints>(ids) && py::reinterpret_borrow<py::array>(ids).ndim() == 1
                     ? py::reinterpret_borrow<Ints>(ids)
                     : need<int64_t>(ids, name(), {-1});
        keep.push_back(a);
        out.col.ints = a.data();
        out.col.n = static_cast<size_t>(a.shape(0));
        return;
    }
    if (!PyList_Check(ids.ptr()) && !PyTuple_Check(ids.ptr()))
        throw std::invalid_argument(name() + " must be a list of str or an int64 numpy array, got " +
                                    std::string(py::str(py::type::of(ids).attr("__name__"))));
    PyObject* seq = ids.ptr();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject** items = PySequence_Fast_ITEMS(seq);
    out.offsets.resize(static_cast<size_t>(n) + 1);
    out.offsets[0] = 0;
    // The str objects of a request's ids sit wherever Python allocated them, and the
    // first touch of each (its type, then its bytes) was ~10% of a W1 request on UUID ids
    // (perf): fetch the header and first bytes of an item kAhead ahead of the copy.
    constexpr Py_ssize_t kAhead = 8;
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (i + kAhead < n) {
            const char* ahead = reinterpret_cast<const char*>(items[i + kAhead]);
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + 64);
        }
        PyObject* item = items[i];
        Py_ssize_t len = 0;
        const char* p = nullptr;
        if (PyUnicode_Check(item) && PyUnicode_IS_COMPACT_ASCII(item)) {  // the common case, no call
            p = static_cast<const char*>(PyUnicode_DATA(item));
            len = PyUnicode_GET_LENGTH(item);
        } else if (PyUnicode_Check(item)) {
            p = PyUnicode_AsUTF8AndSize(item, &len);
        }
        if (!p && PyUnicode_Check(item)) {
            PyErr_Clear();
            throw std::invalid_argument(name() + "[" + std::to_string(i) + "] is not valid Unicode text (a lone "
                                        "surrogate); pass ids that encode as UTF-8");
        }
        if (!p) {
            PyErr_Clear();
            throw std::invalid_argument(name() + "[" + std::to_string(i) + "] must be str, got " +
                                        std::string(py::str(py::type::of(py::handle(item)).attr("__name__"))) +
                                        "; pass ids as a list of str or an int64 numpy array");
        }
        out.text.append(p, static_cast<size_t>(len));
        out.offsets[static_cast<size_t>(i) + 1] = out.text.size();
    }
    out.col.text = out.text.data();
    out.col.offsets = out.offsets.data();
    out.col.n = static_cast<size_t>(n);
}

std::string id_text(py::handle id, const char* name) {
    if (py::isinstance<py::str>(id)) return id.cast<std::string>();
    if (py::isinstance<py::int_>(id) && !py::isinstance<py::bool_>(id)) {
        std::string s;
        fc::append_int_id(s, id.cast<int64_t>());
        return s;
    }
    throw std::invalid_argument(std::string(name) + " must be str or int, got " +
                                std::string(py::str(py::type::of(id).attr("__name__"))));
}

template <typename T>
py::array readonly_view(const std::vector<T>& v, std::vector<py::ssize_t> shape, py::handle owner) {
    py::array_t<T> a(shape, v.data(), owner);
    a.attr("setflags")(py::arg("write") = false);
    return a;
}

// A read-only (n_rows, *inner) view of a field at `offset` in every row record.
template <typename T>
py::array record_view(py::handle owner, const GroupTable& t, size_t offset, std::vector<py::ssize_t> inner) {
    std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(t.n_rows())};
    std::vector<py::ssize_t> strides{static_cast<py::ssize_t>(t.record_bytes())};
    for (py::ssize_t d : inner) {
        shape.push_back(d);
        strides.push_back(sizeof(T));
    }
    // Zero rows: point at a static element so numpy never sees a null data pointer.
    static T empty{};
    const T* data = t.n_rows() ? reinterpret_cast<const T*>(t.record_data().data() + offset) : &empty;
    py::array_t<T> a(shape, strides, data, owner);
    a.attr("setflags")(py::arg("write") = false);
    return a;
}

struct Outs {
    py::array_t<float, py::array::c_style> values;
    py::array_t<uint8_t, py::array::c_style> reasons;
    py::array_t<float, py::array::c_style> group_age;
    fc::Outputs out;
};

Outs outputs_arg(const Plan& plan, py::handle values, py::handle reasons, py::handle group_age) {
    Outs o;
    const auto F = static_cast<py::ssize_t>(plan.n_columns());
    o.values = need<float>(values, "values", {-1, F}, true);
    const py::ssize_t n = o.values.shape(0);
    o.reasons = need<uint8_t>(reasons, "reasons", {n, F}, true);
    o.group_age = need<float>(group_age, "group_age", {n, static_cast<py::ssize_t>(plan.groups().size())}, true);
    o.out.n = static_cast<size_t>(n);
    o.out.values = o.values.mutable_data();
    o.out.reasons = o.reasons.mutable_data();
    o.out.group_age = o.group_age.mutable_data();
    return o;
}

struct ReqArg {
    std::vector<py::object> keep;
    fc::RequestCols req;
};

ReqArg request_arg(const Plan& plan, py::ssize_t n, py::handle eval_time_us, py::handle context, py::handle candidate) {
    ReqArg r;
    auto et = need<int64_t>(eval_time_us, "eval_time_us", {-1});
    if (et.shape(0) != n && et.shape(0) != 1)
        throw std::invalid_argument("eval_time_us has " + std::to_string(et.shape(0)) + " entries; pass " +
                                    std::to_string(n) + " (one per row) or 1 (broadcast)");
    r.keep.push_back(et);
    r.req.eval_time = et.data();
    r.req.eval_stride = et.shape(0) == 1 ? 0 : 1;
    const auto C = static_cast<py::ssize_t>(plan.context_cols().size());
    const bool per_row = py::isinstance<py::array>(context) && py::reinterpret_borrow<py::array>(context).ndim() == 2;
    auto ctx = per_row ? need<float>(context, "context", {n, C}) : need<float>(context, "context", {C});
    r.keep.push_back(ctx);
    r.req.context = ctx.data();
    r.req.context_stride = per_row ? static_cast<size_t>(C) : 0;
    auto cand = need<float>(candidate, "candidate", {n, static_cast<py::ssize_t>(plan.candidate_cols().size())});
    r.keep.push_back(cand);
    r.req.candidate = cand.data();
    return r;
}

// What assemble/serve return: cell counts per reason, the first `fail`, timings.
struct Stats {
    fc::AssembleStats s;
    uint64_t missing() const {
        uint64_t m = 0;
        for (int r = 1; r < fc::kNumReasons; ++r) m += s.reason_counts[r];
        return m;
    }
};

Stats run_assemble(const Plan& plan, const py::sequence& tables, const py::sequence& row_refs,
                   const py::sequence& miss_reasons, py::handle eval_time_us, py::handle context, py::handle candidate,
                   py::handle values, py::handle reasons, py::handle group_age, int threads) {
    Outs o = outputs_arg(plan, values, reasons, group_age);
    const auto n = static_cast<py::ssize_t>(o.out.n);
    ReqArg req = request_arg(plan, n, eval_time_us, context, candidate);
    const size_t G = plan.groups().size();
    if (static_cast<size_t>(py::len(tables)) != G || static_cast<size_t>(py::len(row_refs)) != G ||
        static_cast<size_t>(py::len(miss_reasons)) != G)
        throw std::invalid_argument("assemble: tables, row_refs and miss_reasons need one entry per plan group (" +
                                    std::to_string(G) + "), got " + std::to_string(py::len(tables)) + ", " +
                                    std::to_string(py::len(row_refs)) + ", " + std::to_string(py::len(miss_reasons)));
    std::vector<fc::GroupRows> rows(G);
    std::vector<py::object> keep;
    std::vector<uint8_t> scalar_miss(G);
    for (size_t g = 0; g < G; ++g) {
        const std::string gname = "group " + std::to_string(g);
        py::object t = tables[g];
        if (t.is_none()) {
            rows[g].disabled = true;
            continue;
        }
        auto table = t.cast<TablePtr>();
        if (!table->schema().same_layout(*plan.groups()[g].spec.schema))
            throw std::invalid_argument("assemble: the table of " + gname +
                                        " has a different schema than the plan; build it with plan's schema");
        keep.push_back(t);
        rows[g].table = table->view();
        auto refs = need<int64_t>(row_refs[g], "row_refs[" + std::to_string(g) + "]", {-1});
        if (refs.shape(0) != n && refs.shape(0) != 1)
            throw std::invalid_argument("row_refs[" + std::to_string(g) + "] has " + std::to_string(refs.shape(0)) +
                                        " entries; pass " + std::to_string(n) + " or 1 (broadcast)");
        const int64_t* rp = refs.data();
        for (py::ssize_t i = 0; i < refs.shape(0); ++i)
            if (rp[i] < -1 || rp[i] >= static_cast<int64_t>(table->n_rows()))
                throw std::out_of_range("row_refs[" + std::to_string(g) + "][" + std::to_string(i) + "] = " +
                                        std::to_string(rp[i]) + " is outside the table's " +
                                        std::to_string(table->n_rows()) + " rows; use -1 for no row");
        keep.push_back(refs);
        rows[g].refs = rp;
        rows[g].refs_stride = refs.shape(0) == 1 ? 0 : 1;
        py::object m = miss_reasons[g];
        const std::string mname = "miss_reasons[" + std::to_string(g) + "]";
        const uint8_t* mp = nullptr;
        py::ssize_t mlen = 1;
        if (py::isinstance<py::array>(m)) {
            auto ma = need<uint8_t>(m, mname, {-1});
            mlen = ma.shape(0);
            if (mlen != n && mlen != 1)
                throw std::invalid_argument(mname + " has " + std::to_string(mlen) + " entries; pass " +
                                            std::to_string(n) + ", 1 or an int");
            keep.push_back(ma);
            mp = ma.data();
        } else {
            scalar_miss[g] = static_cast<uint8_t>(m.cast<int>());
            mp = &scalar_miss[g];
        }
        rows[g].miss = mp;
        rows[g].miss_stride = mlen == 1 ? 0 : 1;
        // Only rows without a row (ref -1) read their reason, so only those are checked.
        for (py::ssize_t i = 0; i < std::max(refs.shape(0), mlen); ++i) {
            const uint8_t why = mp[i * static_cast<py::ssize_t>(rows[g].miss_stride)];
            if (rp[i * static_cast<py::ssize_t>(rows[g].refs_stride)] < 0 &&
                (why == fc::kPresent || why >= fc::kNumReasons))
                throw std::invalid_argument(mname + "[" + std::to_string(i) + "] holds " + std::to_string(why) +
                                            " for a row ref of -1; a missing row needs a reason code 1..7");
        }
    }
    Stats st;
    {
        py::gil_scoped_release release;
        st.s = fc::assemble(plan, rows, req.req, o.out, threads);
    }
    return st;
}

Stats run_serve(const Plan& plan, const py::sequence& sources, const py::sequence& ids, const std::string& tenant,
                py::handle eval_time_us, py::handle context, py::handle candidate, py::handle values,
                py::handle reasons, py::handle group_age) {
    // Reused per thread so a request allocates nothing once warm.
    thread_local std::vector<IdsArg> id_args;
    thread_local fc::ServeScratch scratch;
    Outs o = outputs_arg(plan, values, reasons, group_age);
    ReqArg req = request_arg(plan, static_cast<py::ssize_t>(o.out.n), eval_time_us, context, candidate);
    const auto& roles = plan.roles();
    if (static_cast<size_t>(py::len(ids)) != roles.size())
        throw std::invalid_argument("serve: ids needs one entry per plan role (" + std::to_string(roles.size()) +
                                    "), got " + std::to_string(py::len(ids)));
    if (id_args.size() < roles.size()) id_args.resize(roles.size());
    std::vector<py::object> keep;
    std::vector<fc::IdColumn> cols(roles.size());
    for (size_t r = 0; r < roles.size(); ++r) {
        ids_arg(ids[r], [&] { return "ids[" + std::to_string(r) + "] (" + roles[r].entity_type + ")"; }, id_args[r], keep);
        cols[r] = id_args[r].col;
    }
    const size_t G = plan.groups().size();
    if (static_cast<size_t>(py::len(sources)) != G)
        throw std::invalid_argument("serve: sources needs one entry per plan group (" + std::to_string(G) +
                                    "), got " + std::to_string(py::len(sources)));
    std::vector<fc::GroupSource> srcs(G);
    for (size_t g = 0; g < G; ++g) {
        py::object s = sources[g];
        if (s.is_none()) continue;
        if (py::isinstance<ResidentGroup>(s))
            srcs[g].resident = s.cast<ResidentPtr>().get();
        else if (py::isinstance<GroupTable>(s))
            srcs[g].table = s.cast<TablePtr>().get();
        else
            throw std::invalid_argument("serve: sources[" + std::to_string(g) +
                                        "] must be a ResidentGroup, a GroupTable or None, got " +
                                        std::string(py::str(py::type::of(s).attr("__name__"))));
        keep.push_back(std::move(s));
    }
    Stats st;
    {
        py::gil_scoped_release release;
        st.s = fc::serve(plan, tenant, cols, srcs, req.req, o.out, scratch);
    }
    return st;
}

py::tuple schema_state(const Schema& s) { return py::make_tuple(s.dtypes(), s.dims()); }

}  // namespace

void bind_serving(py::module_& m) {
    m.def(
        "encode_key",
        [](const std::string& tenant, const std::string& entity_type, py::handle entity_id) {
            return py::bytes(fc::encode_key(tenant, entity_type, id_text(entity_id, "entity_id")));
        },
        py::arg("tenant"), py::arg("entity_type"), py::arg("entity_id"),
        "Key bytes of one entity: tenant and entity type length-prefixed, then the id's UTF-8 (ints as decimal).");
    m.def(
        "encode_keys",
        [](const std::string& tenant, const std::string& entity_type, py::handle ids) {
            IdsArg a;
            std::vector<py::object> keep;
            ids_arg(ids, [] { return std::string("ids"); }, a, keep);
            std::string prefix;
            fc::append_key_prefix(prefix, tenant, entity_type);
            py::list out(a.col.n);
            std::string key;
            for (size_t i = 0; i < a.col.n; ++i) {
                key = prefix;
                out[i] = fc::append_id(a.col, i, key) ? py::bytes(key) : py::bytes();
            }
            return out;
        },
        py::arg("tenant"), py::arg("entity_type"), py::arg("ids"),
        "encode_key for a list of str ids or an int64 numpy array of ids; b'' where an id is absent "
        "(empty str or negative int: no such entity, served not_applicable).");
    m.def(
        "encode_pair_keys",
        [](const std::string& tenant, const std::string& entity_type, const py::sequence& components) {
            const size_t k = py::len(components);
            if (k < 2)
                throw std::invalid_argument("encode_pair_keys needs ids of at least 2 components, got " +
                                            std::to_string(k));
            std::vector<IdsArg> args(k);
            std::vector<py::object> keep;
            std::vector<fc::IdColumn> cols;
            size_t n = 1;
            for (size_t c = 0; c < k; ++c) {
                ids_arg(components[c], [&] { return "components[" + std::to_string(c) + "]"; }, args[c], keep);
                cols.push_back(args[c].col);
                if (args[c].col.n != 1) {
                    if (n != 1 && n != args[c].col.n)
                        throw std::invalid_argument("components[" + std::to_string(c) + "] has " +
                                                    std::to_string(args[c].col.n) + " ids but another has " +
                                                    std::to_string(n) + "; pass n ids or 1 (broadcast) each");
                    n = args[c].col.n;
                }
            }
            std::string prefix, keys;
            fc::append_key_prefix(prefix, tenant, entity_type);
            std::vector<uint64_t> offs(n + 1);
            std::vector<uint8_t> miss(n);
            fc::write_pair_keys(prefix, cols, n, keys, offs.data(), miss.data());
            py::list out(n);
            for (size_t i = 0; i < n; ++i) out[i] = py::bytes(keys.data() + offs[i], offs[i + 1] - offs[i]);
            return out;
        },
        py::arg("tenant"), py::arg("entity_type"), py::arg("components"),
        "Keys of a pair entity from its components' ids (one id broadcasts); b'' where a component id is absent.");
    m.def(
        "pair_id",
        [](py::args ids) {
            std::vector<std::string> texts;
            for (size_t i = 0; i < ids.size(); ++i) texts.push_back(id_text(ids[i], "pair_id component"));
            std::vector<std::string_view> views(texts.begin(), texts.end());
            return fc::pair_id(views);
        },
        "Injective id of a pair entity: '<len>:<id>' for each component but the last, then the last id.");
    m.def(
        "hash_key", [](const py::bytes& key) {
            std::string_view v = key;
            return fc::hash_key(v.data(), v.size());
        },
        py::arg("key"), "The 64-bit hash the resident index uses for key bytes.");

    py::class_<Schema, SchemaPtr>(m, "Schema", "Dtype codes and dims of a group's features, in group order.")
        .def(py::init([](std::vector<uint8_t> dtypes, std::vector<uint32_t> dims) {
                 return std::make_shared<Schema>(std::move(dtypes), std::move(dims));
             }),
             py::arg("dtypes"), py::arg("dims"))
        .def_property_readonly("n_features", &Schema::n_features)
        .def_property_readonly("n_slots", &Schema::n_slots)
        .def_property_readonly("fingerprint", &Schema::fingerprint)
        .def_property_readonly("row_bytes", &Schema::row_bytes)
        .def_property_readonly("dtypes", &Schema::dtypes)
        .def_property_readonly("dims", &Schema::dims)
        .def_property_readonly("slot_offsets",
                               [](const Schema& s) {
                                   const auto& o = s.slot_offsets();
                                   return py::array_t<int32_t>(static_cast<py::ssize_t>(o.size()), o.data());
                               })
        .def("__eq__",
             [](const Schema& a, py::handle b) {
                 return py::isinstance<Schema>(b) && a.dtypes() == b.cast<const Schema&>().dtypes() &&
                        a.dims() == b.cast<const Schema&>().dims();
             })
        .def("__hash__", &Schema::fingerprint)
        .def("__repr__",
             [](const Schema& s) {
                 return "Schema(dtypes=" + std::string(py::str(py::cast(s.dtypes()))) +
                        ", dims=" + std::string(py::str(py::cast(s.dims()))) + ")";
             })
        .def(py::pickle(&schema_state, [](py::tuple t) {
            return std::make_shared<Schema>(t[0].cast<std::vector<uint8_t>>(), t[1].cast<std::vector<uint32_t>>());
        }));

    m.def(
        "encode_rows",
        [](const SchemaPtr& schema, const py::sequence& columns, py::handle nulls, py::handle feature_ts,
           py::handle generated_at, py::handle published_at, py::handle order) {
            need<int64_t>(feature_ts, "feature_ts", {-1});  // required here (None means "absent" to columns_arg)
            need<int64_t>(published_at, "published_at", {-1});
            ColumnsArg c = columns_arg(*schema, columns, nulls, generated_at, feature_ts, published_at);
            const size_t n = c.in.n;
            const int64_t* perm = nullptr;
            if (!order.is_none()) {
                auto o = need<int64_t>(order, "order", {static_cast<py::ssize_t>(n)});
                c.keep.push_back(o);
                perm = o.data();
                // Every output must be written: anything but a permutation is refused.
                std::vector<uint8_t> seen(n, 0);
                for (size_t i = 0; i < n; ++i) {
                    if (perm[i] < 0 || static_cast<size_t>(perm[i]) >= n || seen[perm[i]]++)
                        throw std::invalid_argument("order[" + std::to_string(i) + "] = " + std::to_string(perm[i]) +
                                                    (perm[i] >= 0 && static_cast<size_t>(perm[i]) < n
                                                         ? " repeats an earlier entry"
                                                         : " is outside 0.." + std::to_string(n)) +
                                                    "; order must be a permutation of the rows (e.g. np.argsort)");
                }
            }
            const auto rb = static_cast<Py_ssize_t>(schema->row_bytes());
            // Rows are encoded straight into their bytes objects: no n * row_bytes
            // temporary to fault in and copy out of (that made one 1M-row call
            // slower than 16 chunked ones). With an order, input row perm[i] is
            // written into out[i]: the columns are still read sequentially.
            py::list out(n);
            std::vector<uint8_t*> dst(n);
            for (size_t i = 0; i < n; ++i) {
                PyObject* b = PyBytes_FromStringAndSize(nullptr, rb);
                if (b == nullptr) throw py::error_already_set();
                PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), b);  // steals b
                dst[perm ? static_cast<size_t>(perm[i]) : i] = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(b));
            }
            {
                py::gil_scoped_release release;
                fc::encode_rows(*schema, c.in, dst.data());
            }
            return out;
        },
        py::arg("schema"), py::arg("columns"), py::arg("nulls"), py::arg("feature_ts"), py::arg("generated_at"),
        py::arg("published_at"), py::kw_only(), py::arg("order") = py::none(),
        "Encodes n rows in format v1 from typed columns (one per feature); out[i] = row order[i].");

    py::class_<GroupTable, TablePtr>(m, "GroupTable", "Immutable rows of one group as float32 slots.")
        .def_static(
            "from_columns",
            [](const SchemaPtr& schema, const py::sequence& columns, py::handle nulls, py::handle generated_at) {
                ColumnsArg c = columns_arg(*schema, columns, nulls, generated_at);
                py::gil_scoped_release release;
                return std::make_shared<GroupTable>(GroupTable::from_columns(schema, c.in));
            },
            py::arg("schema"), py::arg("columns"), py::arg("nulls"), py::arg("generated_at"))
        .def_static(
            "decode",
            [](const SchemaPtr& schema, const py::sequence& rows) {
                return decode_table(schema, bytes_list(rows, "rows", true));
            },
            py::arg("schema"), py::arg("rows"))
        .def_static(
            "missing",
            [](const SchemaPtr& schema, size_t n_rows, int reason) {
                if (reason <= fc::kPresent || reason >= fc::kNumReasons)
                    throw std::invalid_argument("reason must be a missing-reason code 1..7, got " +
                                                std::to_string(reason));
                auto t = std::make_shared<GroupTable>(schema, n_rows);
                for (size_t i = 0; i < n_rows; ++i) t->set_missing(i, static_cast<uint8_t>(reason));
                return t;
            },
            py::arg("schema"), py::arg("n_rows"), py::arg("reason"))
        .def_property_readonly("n_rows", &GroupTable::n_rows)
        .def_property_readonly("nbytes", &GroupTable::nbytes)
        .def_property_readonly("schema",
                               [](const GroupTable& t) { return std::const_pointer_cast<Schema>(t.schema_ptr()); })
        .def("__len__", &GroupTable::n_rows)
        .def("slots",
             [](py::object self) {
                 const auto& t = self.cast<const GroupTable&>();
                 const fc::TableView v = t.view();
                 return record_view<float>(self, t, v.slots_offset, {static_cast<py::ssize_t>(v.n_slots)});
             })
        .def("nulls",
             [](const GroupTable& t) {
                 // Unpacked from the bitmaps into a fresh array: a debugging and test view.
                 const size_t k = t.schema().n_features();
                 const size_t nb = t.schema().bitmap_bytes();
                 py::array_t<uint8_t> out({static_cast<py::ssize_t>(t.n_rows()), static_cast<py::ssize_t>(k)});
                 uint8_t* o = out.mutable_data();
                 const uint8_t* bits = t.null_bits().data();
                 for (size_t r = 0; r < t.n_rows(); ++r)
                     for (size_t j = 0; j < k; ++j) o[r * k + j] = fc::is_null(bits + r * nb, j);
                 return out;
             })
        .def("status",
             [](py::object self) {
                 const auto& t = self.cast<const GroupTable&>();
                 return record_view<uint8_t>(self, t, 8, {});
             })
        .def("generated_at", [](py::object self) {
            const auto& t = self.cast<const GroupTable&>();
            return record_view<int64_t>(self, t, 0, {});
        });

    py::class_<ResidentGroup, ResidentPtr>(m, "ResidentGroup",
                                           "Thread-safe in-memory group: hash index over key bytes + rows.")
        .def(py::init([](const SchemaPtr& schema) { return std::make_shared<ResidentGroup>(schema); }),
             py::arg("schema"))
        .def_property_readonly("schema",
                               [](const ResidentGroup& r) { return std::const_pointer_cast<Schema>(r.schema_ptr()); })
        .def(
            "upsert",
            [](ResidentGroup& self, const py::sequence& keys, const py::sequence& rows, bool keep_not_computed) {
                BytesList k = bytes_list(keys, "keys", false);
                BytesList rb = bytes_list(rows, "rows", false);
                if (k.views.size() != rb.views.size())
                    throw std::invalid_argument("upsert: got " + std::to_string(k.views.size()) + " keys for " +
                                                std::to_string(rb.views.size()) + " rows; pass one key per row");
                TablePtr batch = decode_table(std::const_pointer_cast<Schema>(self.schema_ptr()), rb);
                py::gil_scoped_release release;
                return self.upsert(k.views, *batch, keep_not_computed);
            },
            py::arg("keys"), py::arg("rows"), py::kw_only(), py::arg("keep_not_computed") = false)
        .def(
            "upsert_table",
            [](ResidentGroup& self, const py::sequence& keys, const GroupTable& table) {
                BytesList k = bytes_list(keys, "keys", false);
                py::gil_scoped_release release;
                self.upsert(k.views, table);
            },
            py::arg("keys"), py::arg("table"))
        .def(
            "upsert_columns",
            [](ResidentGroup& self, const py::sequence& keys, const py::sequence& columns, py::handle nulls,
               py::handle generated_at) {
                ColumnsArg c = columns_arg(self.schema(), columns, nulls, generated_at);
                BytesList k = bytes_list(keys, "keys", false);
                py::gil_scoped_release release;
                self.upsert_columns(k.views, c.in);
            },
            py::arg("keys"), py::arg("columns"), py::arg("nulls"), py::arg("generated_at"))
        .def("reserve", &ResidentGroup::reserve, py::arg("n_rows"), py::call_guard<py::gil_scoped_release>())
        .def(
            "remove",
            [](ResidentGroup& self, const py::sequence& keys) {
                BytesList k = bytes_list(keys, "keys", false);
                py::gil_scoped_release release;
                return self.remove(k.views);
            },
            py::arg("keys"))
        .def(
            "lookup",
            [](const ResidentGroup& self, const py::sequence& keys) {
                BytesList k = bytes_list(keys, "keys", false);
                py::array_t<int64_t> out(static_cast<py::ssize_t>(k.views.size()));
                int64_t* p = out.mutable_data();
                py::gil_scoped_release release;
                self.lookup(k.views, p);
                return out;
            },
            py::arg("keys"))
        .def(
            "get",
            [](const ResidentGroup& self, const py::sequence& keys) {
                BytesList k = bytes_list(keys, "keys", false);
                py::gil_scoped_release release;
                return std::make_shared<GroupTable>(self.get(k.views));
            },
            py::arg("keys"))
        .def("clear", &ResidentGroup::clear, py::call_guard<py::gil_scoped_release>())
        .def_static(
            "map_generation",
            [](const SchemaPtr& schema, const std::string& path, bool verify) {
                py::gil_scoped_release release;
                return std::make_shared<ResidentGroup>(schema, fc::Generation::open(path, *schema, verify));
            },
            py::arg("schema"), py::arg("path"), py::kw_only(), py::arg("verify") = true)
        .def("write_generation", &ResidentGroup::write_generation, py::arg("path"), py::arg("sequence"),
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("generation_path",
                               [](const ResidentGroup& r) -> py::object {
                                   if (!r.generation()) return py::none();
                                   return py::str(r.generation()->path());
                               })
        .def_property_readonly("generation_sequence",
                               [](const ResidentGroup& r) -> py::object {
                                   if (!r.generation()) return py::none();
                                   return py::int_(r.generation()->info().changelog_sequence);
                               })
        .def_property_readonly("overlay_rows", &ResidentGroup::overlay_rows)
        .def("__len__", &ResidentGroup::size)
        .def_property_readonly("nbytes", &ResidentGroup::nbytes)
        .def_property_readonly("payload_bytes", &ResidentGroup::payload_bytes)
        .def_property_readonly("index_bytes", &ResidentGroup::index_bytes);

    m.def(
        "verify_generation",
        [](const std::string& path) {
            fc::GenerationInfo g;
            {
                py::gil_scoped_release release;
                g = fc::Generation::verify(path);
            }
            py::dict d;
            d["format_version"] = g.format_version;
            d["file_bytes"] = g.file_bytes;
            d["changelog_sequence"] = g.changelog_sequence;
            d["schema_fingerprint"] = g.schema_fingerprint;
            d["rows"] = g.n_rows;
            d["record_bytes"] = g.record_bytes;
            d["index_slots"] = g.index_slots;
            d["arena_bytes"] = g.arena_bytes;
            d["key_bytes"] = g.key_bytes;
            return d;
        },
        py::arg("path"),
        "Checks a whole generation file (header, sections, body checksum); returns its header fields.");

    py::class_<Plan, std::shared_ptr<Plan>>(m, "Plan", "Immutable assembly plan of one feature set version.")
        .def(py::init([](size_t n_columns, py::handle actions, py::handle constants,
                         const std::vector<std::tuple<std::string, bool, std::vector<uint32_t>>>& roles,
                         const std::vector<std::tuple<SchemaPtr, uint32_t, int64_t,
                                                      std::vector<std::tuple<uint32_t, uint32_t, int32_t>>>>& groups,
                         std::vector<uint32_t> context_cols, std::vector<uint32_t> candidate_cols,
                         const std::vector<std::tuple<uint8_t, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t>>& crosses) {
                 const auto F = static_cast<py::ssize_t>(n_columns);
                 auto a = need<uint8_t>(actions, "actions", {F, fc::kNumReasons});
                 auto c = need<float>(constants, "constants", {F, fc::kNumReasons});
                 std::vector<fc::RoleSpec> rs;
                 for (const auto& [entity_type, per_request, components] : roles)
                     rs.push_back(fc::RoleSpec{entity_type, per_request, components});
                 std::vector<fc::GroupSpec> gs;
                 for (const auto& [schema, role, sla_us, features] : groups) {
                     fc::GroupSpec g{schema, role, sla_us, {}};
                     for (const auto& [feature, dst, ind] : features) g.features.push_back({feature, dst, ind});
                     gs.push_back(std::move(g));
                 }
                 std::vector<fc::CrossSpec> xs;
                 for (const auto& [kind, dst, ga, fa, gb, fb] : crosses) xs.push_back({kind, dst, ga, fa, gb, fb});
                 return std::make_shared<Plan>(n_columns, std::vector<uint8_t>(a.data(), a.data() + a.size()),
                                               std::vector<float>(c.data(), c.data() + c.size()), std::move(rs),
                                               std::move(gs), std::move(context_cols), std::move(candidate_cols),
                                               std::move(xs));
             }),
             py::arg("n_columns"), py::arg("actions"), py::arg("constants"), py::arg("roles"), py::arg("groups"),
             py::arg("context_cols"), py::arg("candidate_cols"), py::arg("crosses"))
        .def_property_readonly("n_columns", &Plan::n_columns)
        .def_property_readonly("n_groups", [](const Plan& p) { return p.groups().size(); })
        .def_property_readonly("n_roles", [](const Plan& p) { return p.roles().size(); })
        .def_property_readonly("n_context", [](const Plan& p) { return p.context_cols().size(); })
        .def_property_readonly("n_candidate", [](const Plan& p) { return p.candidate_cols().size(); });

    py::class_<Stats>(m, "AssembleStats", "Counts and timings of one assemble/serve call.")
        .def_property_readonly("reason_counts",
                               [](const Stats& s) {
                                   py::tuple t(fc::kNumReasons);
                                   for (int r = 0; r < fc::kNumReasons; ++r) t[r] = s.s.reason_counts[r];
                                   return t;
                               })
        .def_property_readonly("missing", &Stats::missing)
        .def_property_readonly("stale", [](const Stats& s) { return s.s.reason_counts[fc::kStale]; })
        .def_property_readonly("fail_row", [](const Stats& s) { return s.s.fail_row; })
        .def_property_readonly("fail_col", [](const Stats& s) { return s.s.fail_col; })
        .def_property_readonly("fail_reason", [](const Stats& s) { return s.s.fail_reason; })
        .def_property_readonly("resolve_us", [](const Stats& s) { return s.s.resolve_ns / 1000.0; })
        .def_property_readonly("assemble_us", [](const Stats& s) { return s.s.assemble_ns / 1000.0; });

    m.def("assemble", &run_assemble, py::arg("plan"), py::arg("tables"), py::arg("row_refs"), py::arg("miss_reasons"),
          py::arg("eval_time_us"), py::arg("context"), py::arg("candidate"), py::arg("values"), py::arg("reasons"),
          py::arg("group_age"), py::kw_only(), py::arg("threads") = 1,
          "Fills values/reasons/group_age in place from per-group row refs (large batches over `threads` threads).");
    m.def("serve", &run_serve, py::arg("plan"), py::arg("sources"), py::arg("ids"), py::arg("tenant"),
          py::arg("eval_time_us"), py::arg("context"), py::arg("candidate"), py::arg("values"), py::arg("reasons"),
          py::arg("group_age"), "One request: resolve keys per group, then assemble, with the GIL released.");
}
