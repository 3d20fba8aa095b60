// featurecore._core: the one private extension. Each area binds its own types.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "codec.h"
#include "generation.h"

namespace py = pybind11;

void bind_keys(py::module_& m);
void bind_rows(py::module_& m);
void bind_resident(py::module_& m);
void bind_assembly(py::module_& m);
void bind_offline(py::module_& m);
void bind_encode(py::module_& m);
void bind_vocabulary(py::module_& m);
void bind_generation(py::module_& m);
void bind_stream(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "featurecore native core: row codec, resident groups, matrix assembly, as-of join";
    bind_keys(m);
    bind_rows(m);
    bind_resident(m);
    bind_assembly(m);
    bind_offline(m);
    bind_encode(m);
    bind_vocabulary(m);
    bind_generation(m);
    bind_stream(m);
    m.def(
        "rows_checksum_ok",
        [](const py::list& rows) {
            py::array_t<bool> out(static_cast<py::ssize_t>(rows.size()));
            bool* o = out.mutable_data();
            for (size_t i = 0; i < rows.size(); ++i) {
                PyObject* r = rows[i].ptr();
                if (!PyBytes_Check(r))
                    throw std::invalid_argument("rows[" + std::to_string(i) + "] must be bytes, got " +
                                                std::string(Py_TYPE(r)->tp_name));
                o[i] = fc::row_checksum_ok(reinterpret_cast<const uint8_t*>(PyBytes_AS_STRING(r)),
                                           static_cast<size_t>(PyBytes_GET_SIZE(r)));
            }
            return out;
        },
        py::arg("rows"),
        "bool per row: False where a v2 row's CRC-32C trailer does not match its bytes (a damaged row).");
    // A caller's mistake found natively (std::invalid_argument, std::out_of_range,
    // std::length_error) surfaces as featurecore.errors.ValidationError, the class users
    // catch for bad input; it is a ValueError, and OutOfRangeError (out_of_range) is an
    // IndexError too, so catches written against pybind11's default mapping keep working.
    // featurecore.errors is pure Python, imported once here; the handles live as long as
    // the module (never released: the interpreter may be finalizing when the module goes).
    py::module_ errors = py::module_::import("featurecore.errors");
    static PyObject* validation = py::object(errors.attr("ValidationError")).release().ptr();
    static PyObject* index = py::object(errors.attr("OutOfRangeError")).release().ptr();
    static PyObject* generation = py::object(errors.attr("GenerationError")).release().ptr();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::out_of_range& e) {
            PyErr_SetString(index, e.what());
        } catch (const std::invalid_argument& e) {
            PyErr_SetString(validation, e.what());
        } catch (const std::length_error& e) {
            PyErr_SetString(validation, e.what());
        } catch (const fc::GenerationError& e) {
            PyErr_SetString(generation, e.what());
        }
    });
}
