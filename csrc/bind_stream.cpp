// pybind11 glue for the stream message decoder (csrc/stream_decode.h): payload pointers
// are taken with the GIL held (bind_helpers' bytes_list keeps the bytes alive), parsed with it released,
// and the columns handed back as numpy arrays. Names match featurecore/_core.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_helpers.h"
#include "stream_decode.h"
#include "stream_newer.h"

namespace py = pybind11;

namespace {

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
    return out;
}

py::array bool_array(const std::vector<uint8_t>& v) {
    py::array_t<bool> out(static_cast<py::ssize_t>(v.size()));
    bool* o = out.mutable_data();
    for (size_t i = 0; i < v.size(); ++i) o[i] = v[i] != 0;
    return out;
}

py::tuple decode_stream(const py::sequence& payloads, const std::vector<std::string>& names, const std::string& kinds,
                        int64_t published_us) {
    if (kinds.size() != names.size())
        throw std::invalid_argument("kinds must hold one letter per name (f: float, i: int, b: bool, c: categorical label), got " +
                                    std::to_string(kinds.size()) + " for " + std::to_string(names.size()) + " names");
    for (char k : kinds)
        if (k != 'f' && k != 'i' && k != 'b' && k != 'c')
            throw std::invalid_argument(std::string("kinds letters must be f (float), i (int), b (bool) or c (categorical label), got '") +
                                        k + "'");
    const fc::bind::BytesList bytes = fc::bind::bytes_list(payloads, "payloads", false);  // kept alive while parsing
    std::vector<fc::StreamPayload> views;
    views.reserve(bytes.views.size());
    for (std::string_view v : bytes.views) views.push_back({reinterpret_cast<const uint8_t*>(v.data()), v.size()});
    fc::StreamColumns out;
    {
        py::gil_scoped_release release;
        out = fc::decode_stream_payloads(views, names, kinds, published_us);
    }
    py::list tenants(out.tenants.size());
    for (size_t m = 0; m < out.tenants.size(); ++m) {
        if (out.accepted[m])
            tenants[m] = py::str(out.tenants[m]);
        else
            tenants[m] = py::none();
    }
    py::list ids(out.ids.size());
    for (size_t r = 0; r < out.ids.size(); ++r) ids[r] = py::str(out.ids[r]);
    py::list columns(kinds.size());
    size_t fi = 0, ii = 0, bi = 0, ci = 0;
    for (size_t j = 0; j < kinds.size(); ++j) {
        if (kinds[j] == 'f') {
            columns[j] = to_array(out.floats[fi++]);
        } else if (kinds[j] == 'i') {
            columns[j] = to_array(out.ints[ii++]);
        } else if (kinds[j] == 'b') {
            columns[j] = bool_array(out.bools[bi++]);
        } else {
            const auto& labels = out.labels[ci++];
            py::list column(labels.size());
            for (size_t r = 0; r < labels.size(); ++r) column[r] = py::str(labels[r]);
            columns[j] = std::move(column);
        }
    }
    return py::make_tuple(bool_array(out.accepted), to_array(out.rows), tenants, ids, to_array(out.feature_ts),
                          to_array(out.generated_at), columns);
}

py::array rows_not_older(const py::sequence& rows, const py::sequence& stored) {
    const fc::bind::BytesList incoming = fc::bind::bytes_list(rows, "rows", false);
    const fc::bind::BytesList old = fc::bind::bytes_list(stored, "stored", true);
    if (old.views.size() != incoming.views.size())
        throw std::invalid_argument("stored must hold one entry (bytes or None) per row: got " + std::to_string(old.views.size()) +
                                    " for " + std::to_string(incoming.views.size()) + " rows");
    std::vector<uint8_t> keep(incoming.views.size());
    {
        py::gil_scoped_release release;
        fc::rows_not_older(incoming.views, old.views, old.absent, keep.data());
    }
    return bool_array(keep);
}

}  // namespace

void bind_stream(py::module_& m) {
    m.def("rows_not_older", &rows_not_older, py::arg("rows"), py::arg("stored"),
          "bool per row: True where rows[i] may replace stored[i] (bytes, or None: nothing stored): the online store's "
          "newest-row rule (featurecore/online/writer.py). False only where the stored row is an intact row of the same "
          "schema (a v1 row 4 bytes shorter counts) with a later (feature_timestamp, generated_at).");
    m.def("decode_stream", &decode_stream, py::arg("payloads"), py::arg("names"), py::arg("kinds"), py::arg("published_us"),
          "Stream message payloads (msgpack) in the common shape -> (accepted bool per message, rows per message, tenant "
          "per message or None, entity id text per row (an int id as its decimal text, as write makes a list of ids), "
          "feature_timestamp int64, "
          "generated_at int64 (published_us where absent), one column per name: float64 (kind f), int64 (i), bool (b) or a list of str labels (c)). "
          "Messages not accepted contribute no rows; the Python decoder decides about them (featurecore/streams/decode.py).");
}
