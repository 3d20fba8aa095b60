// pybind11 glue for response encoders (csrc/matrix_json.h): arguments are checked
// and ids copied out of Python objects with the GIL held; the text is written with
// the GIL released. Names match featurecore/_core.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bind_helpers.h"
#include "matrix_json.h"

using fc::bind::need;

namespace {

py::bytes matrix_json(py::handle values_obj, py::handle reasons_obj, const std::vector<std::string>& columns,
                      const std::string& row_prefix, py::handle row_ids, const std::vector<std::string>& reason_names,
                      bool columnar) {
    auto values = need<float>(values_obj, "values", {-1, -1});
    auto reasons = need<uint8_t>(reasons_obj, "reasons", {values.shape(0), values.shape(1)});
    const size_t n = static_cast<size_t>(values.shape(0)), f = static_cast<size_t>(values.shape(1));
    if (columns.size() != f)
        throw std::invalid_argument("columns must name every column of values: got " + std::to_string(columns.size()) +
                                    " names for " + std::to_string(f) + " columns");
    fc::RowLabels rows;
    rows.prefix = row_prefix;
    std::string text;
    std::vector<uint64_t> offsets;
    py::array_t<int64_t, py::array::c_style> ints;
    if (!row_ids.is_none()) {
        if (py::isinstance<py::array>(row_ids)) {
            ints = py::array_t<int64_t, py::array::c_style>::ensure(row_ids);
            if (!ints || ints.ndim() != 1 || static_cast<size_t>(ints.shape(0)) != n)
                throw std::invalid_argument("row_ids must be an int64 array of one id per row");
            rows.ints = ints.data();
        } else {
            py::sequence seq = py::reinterpret_borrow<py::sequence>(row_ids);
            if (static_cast<size_t>(py::len(seq)) != n)
                throw std::invalid_argument("row_ids must hold one id per row");
            offsets.reserve(n + 1);
            offsets.push_back(0);
            for (size_t i = 0; i < n; ++i) {
                py::handle id = seq[i];
                if (py::isinstance<py::str>(id)) {
                    Py_ssize_t len = 0;
                    const char* p = PyUnicode_AsUTF8AndSize(id.ptr(), &len);
                    if (!p) throw py::error_already_set();
                    text.append(p, static_cast<size_t>(len));
                } else {
                    text.append(py::str(id).cast<std::string>());
                }
                offsets.push_back(text.size());
            }
            rows.text = text.data();
            rows.text_offsets = offsets.data();
        }
    }
    std::string out;
    {
        py::gil_scoped_release release;
        if (columnar)
            fc::write_columnar_json(out, values.data(), reasons.data(), n, f, columns, rows);
        else
            fc::write_keyed_json(out, values.data(), reasons.data(), n, f, columns, rows, reason_names);
    }
    return py::bytes(out);
}

}  // namespace

void bind_encode(py::module_& m) {
    m.def("matrix_json", &matrix_json, py::arg("values"), py::arg("reasons"), py::arg("columns"),
          py::arg("row_prefix"), py::arg("row_ids"), py::arg("reason_names"), py::arg("columnar"),
          "The matrix part of a JSON response (keyed: \"features\" and \"missing\"; columnar: \"columns\", "
          "\"rows\", \"values\", \"reasons\"); floats in their shortest float32 form, NaN/inf as null.");
}
