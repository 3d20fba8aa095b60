// pybind11 glue of the assembly kernel (csrc/assembler.h: AssemblyPlan, assemble) and
// of request resolution (csrc/resolve.h: serve). Arguments are checked here with the
// GIL held; the per-row loops run with it released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "assembler.h"
#include "bind_helpers.h"
#include "reasons.h"
#include "resolve.h"

using namespace fc::bind;
using fc::AssemblyPlan;
using fc::GroupTable;
using fc::ResidentGroup;
using fc::RowLayout;

namespace {

struct Outs {
    py::array_t<float, py::array::c_style> values;
    py::array_t<uint8_t, py::array::c_style> reasons;
    py::array_t<float, py::array::c_style> group_age;
    fc::Outputs out;
};

// The caller's output arrays, checked; or, with `rows` >= 0 and all three None, new
// ones of `rows` rows (allocated here: three numpy calls fewer per request).
Outs outputs_arg(const AssemblyPlan& plan, py::handle values, py::handle reasons, py::handle group_age,
                 py::ssize_t rows = -1) {
    Outs o;
    const auto F = static_cast<py::ssize_t>(plan.n_columns());
    if (rows >= 0 && values.is_none() && reasons.is_none() && group_age.is_none()) {
        o.values = py::array_t<float, py::array::c_style>({rows, F});
        o.reasons = py::array_t<uint8_t, py::array::c_style>({rows, F});
        o.group_age = py::array_t<float, py::array::c_style>({rows, static_cast<py::ssize_t>(plan.groups().size())});
        o.out.n = static_cast<size_t>(rows);
        o.out.values = o.values.mutable_data();
        o.out.reasons = o.reasons.mutable_data();
        o.out.group_age = o.group_age.mutable_data();
        return o;
    }
    if (rows >= 0)
        throw std::invalid_argument("serve: pass rows (the matrix is allocated) or values, reasons and group_age, "
                                    "not both");
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
    py::object keep[3];  // the arrays req points into (eval_time, context, candidate)
    fc::RequestCols req;
    int64_t eval_time = 0;  // a scalar eval_time_us
};

void request_times(py::handle eval_time_us, py::ssize_t n, ReqArg& r) {
    auto et = need<int64_t>(eval_time_us, "eval_time_us", {-1});
    if (et.shape(0) != n && et.shape(0) != 1)
        throw std::invalid_argument("eval_time_us has " + std::to_string(et.shape(0)) + " entries; pass " +
                                    std::to_string(n) + " (one per row) or 1 (broadcast)");
    r.req.eval_time = et.data();
    r.keep[0] = et;
    r.req.eval_stride = et.shape(0) == 1 ? 0 : 1;
}

// Fills r (which must stay where it is: r.req may point into it).
void request_arg(const AssemblyPlan& plan, py::ssize_t n, py::handle eval_time_us, py::handle context,
                 py::handle candidate, ReqArg& r) {
    if (PyLong_CheckExact(eval_time_us.ptr())) {  // one time for every row, without an array
        int overflow = 0;
        r.eval_time = PyLong_AsLongLongAndOverflow(eval_time_us.ptr(), &overflow);
        if (overflow)
            throw std::invalid_argument("eval_time_us " + std::string(py::str(eval_time_us)) +
                                        " is outside int64; pass microseconds since the epoch");
        r.req.eval_time = &r.eval_time;
        r.req.eval_stride = 0;
    } else {
        request_times(eval_time_us, n, r);
    }
    const auto C = static_cast<py::ssize_t>(plan.context_cols().size());
    const bool per_row = py::isinstance<py::array>(context) && py::reinterpret_borrow<py::array>(context).ndim() == 2;
    auto ctx = per_row ? need<float>(context, "context", {n, C}) : need<float>(context, "context", {C});
    r.req.context = ctx.data();
    r.keep[1] = ctx;
    r.req.context_stride = per_row ? static_cast<size_t>(C) : 0;
    if (candidate.is_none() && plan.candidate_cols().empty()) return;  // nothing to read
    auto cand = need<float>(candidate, "candidate", {n, static_cast<py::ssize_t>(plan.candidate_cols().size())});
    r.req.candidate = cand.data();
    r.keep[2] = cand;
}

// What assemble/serve return: cell counts per reason, the first `fail`, timings, and
// (serve) the output arrays written.
struct Stats {
    fc::AssembleStats s;
    py::object values = py::none(), reasons = py::none(), group_age = py::none();
    uint64_t missing() const {
        uint64_t m = 0;
        for (int r = 1; r < fc::kNumReasons; ++r) m += s.reason_counts[r];
        return m;
    }
};

Stats run_assemble(const AssemblyPlan& plan, const py::sequence& tables, const py::sequence& row_refs,
                   const py::sequence& miss_reasons, py::handle eval_time_us, py::handle context, py::handle candidate,
                   py::handle values, py::handle reasons, py::handle group_age, int threads) {
    Outs o = outputs_arg(plan, values, reasons, group_age);
    const auto n = static_cast<py::ssize_t>(o.out.n);
    ReqArg req;
    request_arg(plan, n, eval_time_us, context, candidate, req);
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

Stats run_serve(const AssemblyPlan& plan, const py::sequence& sources, const py::sequence& ids, const std::string& tenant,
                py::handle eval_time_us, py::handle context, py::handle candidate, py::handle values,
                py::handle reasons, py::handle group_age, py::ssize_t rows) {
    // Reused per thread so a request allocates nothing once warm (keep is emptied on the
    // way out, with the GIL held, whatever happens).
    thread_local std::vector<IdsArg> id_args;
    thread_local fc::ServeScratch scratch;
    thread_local std::vector<py::object> keep;
    thread_local std::vector<fc::IdColumn> cols;
    thread_local std::vector<fc::GroupSource> srcs;
    struct Release {
        ~Release() { keep.clear(); }
    } release_keep;
    Outs o = outputs_arg(plan, values, reasons, group_age, rows);
    ReqArg req;
    request_arg(plan, static_cast<py::ssize_t>(o.out.n), eval_time_us, context, candidate, req);
    const auto& roles = plan.roles();
    if (static_cast<size_t>(py::len(ids)) != roles.size())
        throw std::invalid_argument("serve: ids needs one entry per plan role (" + std::to_string(roles.size()) +
                                    "), got " + std::to_string(py::len(ids)));
    if (id_args.size() < roles.size()) id_args.resize(roles.size());
    cols.assign(roles.size(), fc::IdColumn{});
    for (size_t r = 0; r < roles.size(); ++r) {
        ids_arg(ids[r], [&] { return "entities['" + roles[r].entity_type + "']"; }, id_args[r], keep);
        cols[r] = id_args[r].col;
    }
    const size_t G = plan.groups().size();
    if (static_cast<size_t>(py::len(sources)) != G)
        throw std::invalid_argument("serve: sources needs one entry per plan group (" + std::to_string(G) +
                                    "), got " + std::to_string(py::len(sources)));
    srcs.assign(G, fc::GroupSource{});
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
                                        type_name(s));
        keep.push_back(std::move(s));
    }
    Stats st;
    {
        py::gil_scoped_release release;
        st.s = fc::serve(plan, tenant, cols, srcs, req.req, o.out, scratch);
    }
    st.values = std::move(o.values);
    st.reasons = std::move(o.reasons);
    st.group_age = std::move(o.group_age);
    return st;
}
}  // namespace

void bind_assembly(py::module_& m) {
    py::class_<AssemblyPlan, std::shared_ptr<AssemblyPlan>>(m, "AssemblyPlan",
                                                          "Immutable assembly plan of one feature set version.")
        .def(py::init([](size_t n_columns, py::handle actions, py::handle constants,
                         const std::vector<std::tuple<std::string, bool, std::vector<uint32_t>>>& roles,
                         const std::vector<std::tuple<RowLayoutPtr, uint32_t, int64_t,
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
                 return std::make_shared<AssemblyPlan>(n_columns, std::vector<uint8_t>(a.data(), a.data() + a.size()),
                                               std::vector<float>(c.data(), c.data() + c.size()), std::move(rs),
                                               std::move(gs), std::move(context_cols), std::move(candidate_cols),
                                               std::move(xs));
             }),
             py::arg("n_columns"), py::arg("actions"), py::arg("constants"), py::arg("roles"), py::arg("groups"),
             py::arg("context_cols"), py::arg("candidate_cols"), py::arg("crosses"))
        .def_property_readonly("n_columns", &AssemblyPlan::n_columns)
        .def_property_readonly("n_groups", [](const AssemblyPlan& p) { return p.groups().size(); })
        .def_property_readonly("n_roles", [](const AssemblyPlan& p) { return p.roles().size(); })
        .def_property_readonly("n_context", [](const AssemblyPlan& p) { return p.context_cols().size(); })
        .def_property_readonly("n_candidate", [](const AssemblyPlan& p) { return p.candidate_cols().size(); });

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
        .def_property_readonly("assemble_us", [](const Stats& s) { return s.s.assemble_ns / 1000.0; })
        .def_readonly("values", &Stats::values)
        .def_readonly("reasons", &Stats::reasons)
        .def_readonly("group_age", &Stats::group_age);

    m.def("assemble", &run_assemble, py::arg("plan"), py::arg("tables"), py::arg("row_refs"), py::arg("miss_reasons"),
          py::arg("eval_time_us"), py::arg("context"), py::arg("candidate"), py::arg("values"), py::arg("reasons"),
          py::arg("group_age"), py::kw_only(), py::arg("threads") = 1,
          "Fills values/reasons/group_age in place from per-group row refs (large batches over `threads` threads).");
    m.def("serve", &run_serve, py::arg("plan"), py::arg("sources"), py::arg("ids"), py::arg("tenant"),
          py::arg("eval_time_us"), py::arg("context"), py::arg("candidate"), py::arg("values") = py::none(),
          py::arg("reasons") = py::none(), py::arg("group_age") = py::none(), py::arg("rows") = -1,
          "One request: resolve keys per group, then assemble, with the GIL released.");
}
