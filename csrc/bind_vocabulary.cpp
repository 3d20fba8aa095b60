// pybind11 glue of the shared vocabulary: the codes of csrc/reasons.h, the name
// length limit and the pair-id format of csrc/keys.h, so Python reads them from
// their one definition instead of keeping a copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "keys.h"
#include "reasons.h"

namespace py = pybind11;

namespace {

py::dict names(const char* const* names, int n) {
    py::dict out;
    for (int i = 0; i < n; ++i) out[py::str(names[i])] = i;
    return out;
}

using Offsets = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using Bytes = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// A large_string column given as (offsets int64 (n + 1,), data uint8), checked so that
// every text lies inside data.
fc::TextColumn text_column(const Offsets& offsets, const Bytes& data, const std::string& what) {
    if (offsets.ndim() != 1 || offsets.shape(0) < 1)
        throw std::invalid_argument(what + " offsets must be a 1-d int64 array of n + 1 entries");
    const int64_t* o = offsets.data();
    const size_t n = static_cast<size_t>(offsets.shape(0)) - 1;
    for (size_t i = 0; i < n; ++i)
        if (o[i] < 0 || o[i + 1] < o[i] || o[i + 1] > data.size())
            throw std::invalid_argument(what + " offsets[" + std::to_string(i + 1) + "] = " + std::to_string(o[i + 1]) +
                                        " is not within its data of " + std::to_string(data.size()) + " bytes");
    return {o, reinterpret_cast<const char*>(data.data()), n};
}

}  // namespace

void bind_vocabulary(py::module_& m) {
    m.attr("REASONS") = names(fc::kReasonNames, fc::kNumReasons);
    m.attr("ACTIONS") = names(fc::kActionNames, fc::kNumActions);
    m.attr("DTYPES") = names(fc::kDTypeNames, fc::kNumDTypes);
    m.attr("MAX_NAME_BYTES") = fc::kMaxNameBytes;
    m.def(
        "key_prefix",
        [](const std::string& tenant, const std::string& entity_type) {
            std::string out;
            fc::append_key_prefix(out, tenant, entity_type);
            return py::bytes(out);
        },
        py::arg("tenant"), py::arg("entity_type"),
        "The bytes every key of (tenant, entity type) starts with: encode_key(tenant, entity_type, id) = prefix + id.");
    m.def(
        "decode_key",
        [](const py::bytes& key) {
            const std::string_view k = key;
            const size_t p = fc::key_prefix_length(k.data(), k.size());
            if (p == 0)
                throw std::invalid_argument("decode_key: " + std::to_string(k.size()) +
                                            " bytes are not an entity key (encode_key's format)");
            const size_t t = static_cast<uint8_t>(k[1]);
            return py::make_tuple(py::bytes(k.data() + 2, t), py::bytes(k.data() + 3 + t, p - 3 - t),
                                  py::bytes(k.data() + p, k.size() - p));
        },
        py::arg("key"), "(tenant, entity_type, id) bytes of a key: the inverse of encode_key.");
    m.def(
        "join_pair_ids",
        [](const py::list& offsets, const py::list& data) {
            if (offsets.size() != data.size())
                throw std::invalid_argument("join_pair_ids: offsets and data need one entry per component");
            std::vector<Offsets> keep_offsets;
            std::vector<Bytes> keep_data;
            std::vector<fc::TextColumn> cols;
            for (size_t c = 0; c < offsets.size(); ++c) {
                keep_offsets.push_back(offsets[c].cast<Offsets>());
                keep_data.push_back(data[c].cast<Bytes>());
                cols.push_back(text_column(keep_offsets.back(), keep_data.back(), "component " + std::to_string(c)));
            }
            const size_t n = cols.empty() ? 0 : cols[0].n;
            Offsets out_offsets(static_cast<py::ssize_t>(n + 1));
            std::string out;
            {
                py::gil_scoped_release release;
                fc::join_pair_ids(cols, out, out_offsets.mutable_data());
            }
            Bytes out_data(static_cast<py::ssize_t>(out.size()));
            std::copy(out.begin(), out.end(), out_data.mutable_data());
            return py::make_tuple(out_offsets, out_data);
        },
        py::arg("offsets"), py::arg("data"),
        "pair_id of every row of component text columns, each an Arrow large_string layout (offsets int64 (n + 1,), "
        "data uint8); returns (offsets, data) of the pair ids in the same layout.");
    m.def(
        "split_pair_ids",
        [](const Offsets& offsets, const Bytes& data, size_t n_components) {
            if (n_components < 2)
                throw std::invalid_argument("split_pair_ids: n_components must be at least 2, got " +
                                            std::to_string(n_components));
            const fc::TextColumn col = text_column(offsets, data, "ids");
            const auto k = static_cast<py::ssize_t>(n_components), n = static_cast<py::ssize_t>(col.n);
            py::array_t<int64_t> begin({k, n}), length({k, n});
            py::array_t<bool> valid(n);
            int64_t* b = begin.mutable_data();
            int64_t* l = length.mutable_data();
            bool* v = valid.mutable_data();
            {
                py::gil_scoped_release release;
                std::vector<size_t> bs(n_components), ls(n_components);
                for (size_t i = 0; i < col.n; ++i) {
                    const std::string_view id(col.data + col.offsets[i], static_cast<size_t>(col.offsets[i + 1] - col.offsets[i]));
                    v[i] = fc::split_pair_id(id, n_components, bs.data(), ls.data());
                    for (size_t c = 0; c < n_components; ++c) {
                        b[c * col.n + i] = v[i] ? col.offsets[i] + static_cast<int64_t>(bs[c]) : 0;
                        l[c * col.n + i] = v[i] ? static_cast<int64_t>(ls[c]) : 0;
                    }
                }
            }
            return py::make_tuple(begin, length, valid);
        },
        py::arg("offsets"), py::arg("data"), py::arg("n_components"),
        "The inverse of join_pair_ids: for ids in an Arrow large_string layout, (begin int64 (k, n), length int64 (k, n), "
        "valid bool (n,)): component c of id i is data[begin[c, i]:begin[c, i] + length[c, i]] (offsets into data), "
        "valid False where id i is not a pair id of k components.");
}
