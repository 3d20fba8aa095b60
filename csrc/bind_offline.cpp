#include <pybind11/pybind11.h>
namespace py = pybind11;
void bind_offline(py::module_& m) {}
