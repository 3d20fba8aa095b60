// pybind11 glue for the offline side: AsofJoin and LatestPerKey (csrc/asof_join.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

#include "asof_join.h"
#include "bind_helpers.h"

using fc::bind::need;
using fc::AsofJoin;
using fc::LatestPerKey;

namespace {

// Both streaming kernels take history in chunks the same way: checked arrays in, the
// merge itself with the GIL released.
template <class Kernel>
size_t add_chunk(Kernel& self, const py::array& keys, const py::array& feature_ts, const py::array& generated_at,
                 int64_t ref_offset) {
    const int64_t* k = need<int64_t>(keys, "keys", {-1}).data();
    const py::ssize_t m = keys.shape(0);
    const int64_t* ft = need<int64_t>(feature_ts, "feature_ts", {m}).data();
    const int64_t* ga = need<int64_t>(generated_at, "generated_at", {m}).data();
    if (ref_offset < 0) throw std::invalid_argument("ref_offset must be >= 0, got " + std::to_string(ref_offset));
    py::gil_scoped_release release;
    return self.add(k, ft, ga, static_cast<size_t>(m), ref_offset);
}

}  // namespace

void bind_offline(py::module_& m) {
    py::class_<AsofJoin>(m, "AsofJoin", R"doc(
Point-in-time search of events against one group's history (see csrc/asof_join.h).

Feed the history with add() in write order (a larger ref is a later write), then
finish() -> (row_refs int64 (n,), miss_reason uint8 (n,), winners int64 (w,)).
)doc")
        .def(py::init([](const py::array& event_keys, const py::array& event_ts,
                         const std::optional<py::array>& event_valid, bool strict, int threads) {
                 const int64_t* keys = need<int64_t>(event_keys, "event_keys", {-1}).data();
                 const py::ssize_t n = event_keys.shape(0);
                 const int64_t* ts = need<int64_t>(event_ts, "event_ts", {n}).data();
                 const uint8_t* valid = event_valid ? need<uint8_t>(*event_valid, "event_valid", {n}).data() : nullptr;
                 py::gil_scoped_release release;
                 return new AsofJoin(keys, valid, ts, static_cast<size_t>(n), strict, threads);
             }),
             py::arg("event_keys"), py::arg("event_ts"), py::arg("event_valid") = py::none(), py::kw_only(),
             py::arg("strict") = false, py::arg("threads") = 1)
        .def(
            "add",
            &add_chunk<AsofJoin>,
            py::arg("keys"), py::arg("feature_ts"), py::arg("generated_at"), py::arg("ref_offset") = 0,
            "Merges one history chunk (rows get refs ref_offset + i); returns rows whose key occurs in the events.")
        .def(
            "finish",
            [](AsofJoin& self) {
                const auto n = static_cast<py::ssize_t>(self.n_events());
                py::array_t<int64_t> refs(n);
                py::array_t<uint8_t> reasons(n);
                int64_t* r = refs.mutable_data();
                uint8_t* why = reasons.mutable_data();
                std::vector<int64_t> winners;
                {
                    py::gil_scoped_release release;
                    self.finish(r, why, winners);
                }
                py::array_t<int64_t> chosen(static_cast<py::ssize_t>(winners.size()));
                std::copy(winners.begin(), winners.end(), chosen.mutable_data());
                return py::make_tuple(refs, reasons, chosen);
            },
            "Returns (row_refs int64 (n,), miss_reason uint8 (n,), winners int64 (w,)): row_refs index the\n"
            "sorted distinct history refs `winners` (-1: no row, with its reason in miss_reason).")
        .def_property_readonly("n_events", &AsofJoin::n_events)
        .def_property_readonly("n_entities", &AsofJoin::n_entities);

    py::class_<LatestPerKey>(m, "LatestPerKey", R"doc(
The newest eligible row of every key as of one time (see csrc/asof_join.h).

Feed the history with add() in write order, then finish() -> (refs int64 (w,) ascending,
keys int64 (w,)): the winning row of each key that has one.
)doc")
        .def(py::init<int64_t, bool>(), py::arg("as_of_us"), py::kw_only(), py::arg("strict") = false)
        .def(
            "add",
            &add_chunk<LatestPerKey>,
            py::arg("keys"), py::arg("feature_ts"), py::arg("generated_at"), py::arg("ref_offset") = 0,
            "Merges one history chunk (rows get refs ref_offset + i); returns its eligible rows.")
        .def(
            "finish",
            [](const LatestPerKey& self) {
                std::vector<int64_t> refs, keys;
                {
                    py::gil_scoped_release release;
                    self.finish(refs, keys);
                }
                py::array_t<int64_t> out_refs(static_cast<py::ssize_t>(refs.size()));
                py::array_t<int64_t> out_keys(static_cast<py::ssize_t>(keys.size()));
                std::copy(refs.begin(), refs.end(), out_refs.mutable_data());
                std::copy(keys.begin(), keys.end(), out_keys.mutable_data());
                return py::make_tuple(out_refs, out_keys);
            },
            "Returns (refs int64 (w,) ascending, keys int64 (w,)).")
        .def_property_readonly("n_keys", &LatestPerKey::n_keys);

    m.def(
        "decimal_text_order",
        [](const py::array& ids) {
            const int64_t* p = need<int64_t>(ids, "ids", {-1}).data();
            const auto n = ids.shape(0);
            py::array_t<int64_t> order(n);
            int64_t* out = order.mutable_data();
            {
                py::gil_scoped_release release;
                fc::decimal_text_order(p, static_cast<size_t>(n), out);
            }
            return order;
        },
        py::arg("ids"),
        "Order int64 (n,) of int64 ids by their decimal text (the key order of integer ids).");
}
