// pybind11 glue of entity keys (csrc/keys.h) and of the id rules of csrc/resolve.h:
// the bytes a resident group is keyed by, built by the same functions serving uses.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bind_helpers.h"
#include "keys.h"
#include "resolve.h"

using namespace fc::bind;

namespace {

// A list of n bytes objects from keys written by write(keys, offs, miss) into one buffer.
template <typename Write>
py::list key_list(size_t n, const Write& write) {
    std::string keys;
    std::vector<uint64_t> offs(n + 1);
    std::vector<uint8_t> miss(n);
    write(keys, offs.data(), miss.data());
    py::list out(n);
    for (size_t i = 0; i < n; ++i) out[i] = py::bytes(keys.data() + offs[i], offs[i + 1] - offs[i]);
    return out;
}

}  // namespace

void bind_keys(py::module_& m) {
    m.def(
        "encode_key",
        [](const std::string& tenant, const std::string& entity_type, py::handle entity_id) {
            return py::bytes(fc::encode_key(tenant, entity_type, id_text(entity_id, "entity_id")));
        },
        py::arg("tenant"), py::arg("entity_type"), py::arg("entity_id"),
        "Key bytes of one entity: tenant and entity type length-prefixed, then the id's UTF-8 (ints as decimal).");
    m.def(
        "encode_keys",
        [](const std::string& tenant, const std::string& entity_type, py::handle ids, const std::string& name) {
            IdsArg a;
            std::vector<py::object> keep;
            ids_arg(ids, [&] { return name; }, a, keep);
            std::string prefix;
            fc::append_key_prefix(prefix, tenant, entity_type);
            return key_list(a.col.n, [&](std::string& keys, uint64_t* offs, uint8_t* miss) {
                fc::write_keys(prefix, {a.col}, a.col.n, keys, offs, miss);
            });
        },
        py::arg("tenant"), py::arg("entity_type"), py::arg("ids"), py::kw_only(), py::arg("name") = "ids",
        "encode_key for ids (a list of str, an int64, S or U numpy array, a pyarrow StringArray); b'' where an id "
        "is absent (empty str or negative int: no such entity, served not_applicable). `name` names ids in errors.");
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
            for (size_t c = 0; c < k; ++c) {
                ids_arg(components[c], [&] { return "components[" + std::to_string(c) + "]"; }, args[c], keep);
                cols.push_back(args[c].col);
            }
            std::string prefix;
            fc::append_key_prefix(prefix, tenant, entity_type);
            const size_t n = fc::pair_rows(cols);
            return key_list(n, [&](std::string& keys, uint64_t* offs, uint8_t* miss) {
                fc::write_keys(prefix, cols, n, keys, offs, miss);
            });
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

}
