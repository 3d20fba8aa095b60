// featurecore._core: the one private extension. Each area binds its own types.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_serving(py::module_& m);
void bind_offline(py::module_& m);

PYBIND11_MODULE(_core, m) {
    m.doc() = "featurecore native core: row codec, resident groups, matrix assembly, as-of join";
    bind_serving(m);
    bind_offline(m);
}
