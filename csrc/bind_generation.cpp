// Bindings of generation files that are not a resident group (resident groups' own
// map_generation / write_generation are bound with ResidentGroup, in bind_serving.cpp).
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "generation.h"

namespace py = pybind11;

namespace {

// A verified mapping held by Python (Generation is const and shared; pybind11 wants a
// mutable holder, so it is wrapped).
struct MappedGeneration {
    std::shared_ptr<const fc::Generation> generation;
};

}  // namespace

void bind_generation(py::module_& m) {
    py::class_<MappedGeneration>(
        m, "MappedGeneration",
        "A generation file mapped and verified by this process (map_generation_file). While it is "
        "alive, ResidentGroup.map_generation of the same unchanged file, here or in a child forked "
        "after it, shares this mapping instead of mapping and checksumming the file again.")
        .def_property_readonly("path", [](const MappedGeneration& g) { return g.generation->path(); })
        .def_property_readonly("sequence",
                               [](const MappedGeneration& g) { return g.generation->info().changelog_sequence; })
        .def_property_readonly("rows", [](const MappedGeneration& g) { return g.generation->info().n_rows; })
        .def_property_readonly("file_bytes", [](const MappedGeneration& g) { return g.generation->info().file_bytes; });
    m.def(
        "map_generation_file",
        [](const std::string& path) {
            std::shared_ptr<const fc::Generation> g;
            {
                py::gil_scoped_release release;
                g = fc::Generation::map(path);
            }
            return MappedGeneration{std::move(g)};
        },
        py::arg("path"),
        "Maps a generation file read-only and checks it whole (header, sections, body checksum), or "
        "returns this process's live verified mapping of it. Raises GenerationError.");
}
