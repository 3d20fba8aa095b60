// pybind11 glue of typed rows: RowLayout, the row codec's encoder (csrc/codec.h) and
// GroupTable (csrc/group_table.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_helpers.h"
#include "codec.h"
#include "group_table.h"

using namespace fc::bind;
using fc::GroupTable;
using fc::RowLayout;

namespace {

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

py::tuple schema_state(const RowLayout& s) { return py::make_tuple(s.dtypes(), s.dims()); }

}  // namespace

void bind_rows(py::module_& m) {
    py::class_<RowLayout, RowLayoutPtr>(m, "RowLayout", "Dtype codes and dims of a group's features, in group order.")
        .def(py::init([](std::vector<uint8_t> dtypes, std::vector<uint32_t> dims) {
                 return std::make_shared<RowLayout>(std::move(dtypes), std::move(dims));
             }),
             py::arg("dtypes"), py::arg("dims"))
        .def_property_readonly("n_features", &RowLayout::n_features)
        .def_property_readonly("n_slots", &RowLayout::n_slots)
        .def_property_readonly("fingerprint", &RowLayout::fingerprint)
        .def_property_readonly("row_bytes", &RowLayout::row_bytes)
        .def_property_readonly("dtypes", &RowLayout::dtypes)
        .def_property_readonly("dims", &RowLayout::dims)
        .def_property_readonly("slot_offsets",
                               [](const RowLayout& s) {
                                   const auto& o = s.slot_offsets();
                                   return py::array_t<int32_t>(static_cast<py::ssize_t>(o.size()), o.data());
                               })
        .def("__eq__",
             [](const RowLayout& a, py::handle b) {
                 return py::isinstance<RowLayout>(b) && a.dtypes() == b.cast<const RowLayout&>().dtypes() &&
                        a.dims() == b.cast<const RowLayout&>().dims();
             })
        .def("__hash__", &RowLayout::fingerprint)
        .def("__repr__",
             [](const RowLayout& s) {
                 return "RowLayout(dtypes=" + std::string(py::str(py::cast(s.dtypes()))) +
                        ", dims=" + std::string(py::str(py::cast(s.dims()))) + ")";
             })
        .def(py::pickle(&schema_state, [](py::tuple t) {
            return std::make_shared<RowLayout>(t[0].cast<std::vector<uint8_t>>(), t[1].cast<std::vector<uint32_t>>());
        }));

    m.def(
        "encode_rows",
        [](const RowLayoutPtr& schema, const py::sequence& columns, py::handle nulls, py::handle feature_ts,
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
            [](const RowLayoutPtr& schema, const py::sequence& columns, py::handle nulls, py::handle generated_at) {
                ColumnsArg c = columns_arg(*schema, columns, nulls, generated_at);
                py::gil_scoped_release release;
                return std::make_shared<GroupTable>(GroupTable::from_columns(schema, c.in));
            },
            py::arg("schema"), py::arg("columns"), py::arg("nulls"), py::arg("generated_at"))
        .def_static(
            "decode",
            [](const RowLayoutPtr& schema, const py::sequence& rows) {
                return decode_table(schema, bytes_list(rows, "rows", true));
            },
            py::arg("schema"), py::arg("rows"))
        .def_static(
            "missing",
            [](const RowLayoutPtr& schema, size_t n_rows, int reason) {
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
                               [](const GroupTable& t) { return std::const_pointer_cast<RowLayout>(t.schema_ptr()); })
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

}
