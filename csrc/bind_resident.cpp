// pybind11 glue of ResidentGroup (csrc/resident.h) and generation files
// (csrc/generation.h): keys and rows are checked and decoded with the GIL held, the
// index work runs with it released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_helpers.h"
#include "generation.h"
#include "resident.h"

using namespace fc::bind;
using fc::GroupTable;
using fc::ResidentGroup;
using fc::RowLayout;

void bind_resident(py::module_& m) {
    py::class_<ResidentGroup, ResidentPtr>(m, "ResidentGroup",
                                           "Thread-safe in-memory group: hash index over key bytes + rows.")
        .def(py::init([](const RowLayoutPtr& schema) { return std::make_shared<ResidentGroup>(schema); }),
             py::arg("schema"))
        .def_property_readonly("schema",
                               [](const ResidentGroup& r) { return std::const_pointer_cast<RowLayout>(r.schema_ptr()); })
        .def(
            "upsert",
            [](ResidentGroup& self, const py::sequence& keys, const py::sequence& rows, bool keep_not_computed) {
                BytesList k = bytes_list(keys, "keys", false);
                BytesList rb = bytes_list(rows, "rows", false);
                if (k.views.size() != rb.views.size())
                    throw std::invalid_argument("upsert: got " + std::to_string(k.views.size()) + " keys for " +
                                                std::to_string(rb.views.size()) + " rows; pass one key per row");
                TablePtr batch = decode_table(std::const_pointer_cast<RowLayout>(self.schema_ptr()), rb);
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
        .def("fit_index", &ResidentGroup::fit_index, py::call_guard<py::gil_scoped_release>())
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
            [](const RowLayoutPtr& schema, const std::string& path, bool verify, size_t part) {
                py::gil_scoped_release release;
                return std::make_shared<ResidentGroup>(schema, fc::Generation::open(path, *schema, verify, part), part);
            },
            py::arg("schema"), py::arg("path"), py::kw_only(), py::arg("verify") = true, py::arg("part") = 0)
        .def("write_generation",
             py::overload_cast<const std::string&, uint64_t>(&ResidentGroup::write_generation, py::const_),
             py::arg("path"), py::arg("sequence"), py::call_guard<py::gil_scoped_release>())
        .def_static(
            "write_entity_generation",
            [](const std::string& path, const std::vector<ResidentPtr>& groups, uint64_t sequence) {
                std::vector<const ResidentGroup*> raw;
                for (size_t k = 0; k < groups.size(); ++k) {
                    if (!groups[k]) throw std::invalid_argument("write_entity_generation: groups[" + std::to_string(k) + "] is None; pass ResidentGroups");
                    raw.push_back(groups[k].get());
                }
                py::gil_scoped_release release;
                ResidentGroup::write_generation(path, raw, sequence);
            },
            py::arg("path"), py::arg("groups"), py::arg("sequence"))
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
        .def_property_readonly("peer_map_rows",
                               [](const ResidentGroup& r) -> py::object {
                                   const int64_t n = r.peer_map_rows();
                                   return n < 0 ? py::object(py::none()) : py::object(py::int_(n));
                               })
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
            d["null_bytes"] = g.null_bytes;
            d["index_slots"] = g.index_slots;
            d["arena_bytes"] = g.arena_bytes;
            d["key_bytes"] = g.key_bytes;
            d["parts"] = g.parts.size();
            return d;
        },
        py::arg("path"),
        "Checks a whole generation file (header, sections, body checksum); returns its header fields.");

}
