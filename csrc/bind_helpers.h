// The one set of helpers the pybind11 glue files (csrc/bind_*.cpp) share to take
// arguments from Python: array checks (need<T>: dtype, rank, shape, contiguity,
// writability, with messages naming the argument and the fix), id columns
// (ids_arg), byte-string lists and typed feature columns. All of them run with the
// GIL held and copy or keep alive what the native call then reads with the GIL
// released; none keeps a Python object beyond the `keep` it is given.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "codec.h"
#include "group_table.h"
#include "resident.h"
#include "resolve.h"

namespace py = pybind11;

namespace fc::bind {

using RowLayoutPtr = std::shared_ptr<RowLayout>;
using TablePtr = std::shared_ptr<GroupTable>;
using ResidentPtr = std::shared_ptr<ResidentGroup>;

// The Python type name of obj, for messages.
std::string type_name(py::handle obj);
// "(3, 4)" / "(3,)" of an array, and of a wanted shape ("*" for any extent).
std::string shape_str(const py::array& a);
std::string want_str(std::initializer_list<py::ssize_t> shape);

template <typename T>
inline const char* dtype_name() {
    if (std::is_same<T, float>::value) return "float32";
    if (std::is_same<T, double>::value) return "float64";
    if (std::is_same<T, int64_t>::value) return "int64";
    if (std::is_same<T, int32_t>::value) return "int32";
    if (std::is_same<T, bool>::value) return "bool";
    return "uint8";
}

// Checks that obj is a C-contiguous T array of `shape` (-1 = any extent) and
// returns it; `writable` for outputs filled in place. Messages are only built
// on failure: this runs several times per request.
template <typename T>
py::array_t<T, py::array::c_style> need(py::handle obj, std::string_view name, std::initializer_list<py::ssize_t> shape,
                                        bool writable = false) {
    using Arr = py::array_t<T, py::array::c_style>;
    auto want = [&] {
        return std::string(name) + " must be a C-contiguous " + dtype_name<T>() + " array of shape " + want_str(shape);
    };
    if (!py::isinstance<py::array>(obj))
        throw std::invalid_argument(want() + ", got " + type_name(obj) +
                                    "; pass a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(obj);
    bool ok = py::isinstance<Arr>(obj) && a.ndim() == static_cast<py::ssize_t>(shape.size());
    py::ssize_t d = 0;
    for (py::ssize_t extent : shape) {
        ok = ok && (extent < 0 || a.shape(d) == extent);
        ++d;
    }
    if (!ok)
        throw std::invalid_argument(want() + ", got " + std::string(py::str(a.dtype())) + " " + shape_str(a) +
                                    "; convert with np.ascontiguousarray(x, dtype=np." + dtype_name<T>() + ")");
    if (writable && !a.writeable())
        throw std::invalid_argument(std::string(name) + " must be writeable; pass a fresh np.empty array");
    return py::reinterpret_borrow<Arr>(obj);
}

// Typed columns of a batch, kept alive by `keep`.
struct ColumnsArg {
    fc::ColumnsIn in;
    std::vector<py::object> keep;
};


// Typed columns with their generated_at; the encoder also passes feature_ts and
// published_at (the other callers keep neither).
ColumnsArg columns_arg(const RowLayout& s, const py::sequence& columns, py::handle nulls, py::handle generated_at,
                       py::handle feature_ts = py::none(), py::handle published_at = py::none());

// Byte strings of a sequence, kept alive by `keep` (a tuple of the items: one
// C-level copy instead of a reference per item, and immune to the caller
// mutating a list while the GIL is released).
// With allow_absent, None (kEntityNotFound) or a reason code stands for a row
// without bytes; absent[i] holds its reason.
struct BytesList {
    std::vector<std::string_view> views;
    std::vector<uint8_t> absent;
    py::tuple keep;
};

BytesList bytes_list(const py::sequence& seq, const char* name, bool allow_absent);

// Decodes rows (absent rows get their reason) with the GIL released.
TablePtr decode_table(const RowLayoutPtr& schema, const BytesList& rows);

// Ids of one role, taken from Python objects with the GIL held: a list/tuple of str
// (copied), an int64 array (read in place), or packed text: a 1-d numpy S array
// (bytes, trailing NULs stripped as numpy reads them), a 1-d numpy U array
// (UCS-4 encoded to UTF-8, trailing NULs stripped) or a pyarrow
// StringArray/LargeStringArray (offsets and data read in place; nulls refused).
// Holds no Python object, so serve can keep one per thread across calls (an array
// read in place is kept alive by the caller's `keep`).
struct IdsArg {
    std::string text;
    std::vector<uint64_t> offsets;
    fc::IdColumn col;
};

using NameFn = std::function<std::string()>;

// The packed forms of ids_arg: numpy arrays of any dtype but int64 (refused unless S or
// U; an S array whose ids all fill its width is read in place, kept by `keep`), and
// pyarrow arrays (false when ids is none: not a pyarrow object).
void packed_array_ids(const py::array& a, const NameFn& name, IdsArg& out, std::vector<py::object>& keep);
bool arrow_ids(py::handle ids, const NameFn& name, IdsArg& out, std::vector<py::object>& keep);
// What an id argument may be, for messages.
extern const char* const kIdForms;

// `name()` builds the argument's name for a message (only on failure).
template <typename Name>
void ids_arg(py::handle ids, const Name& name, IdsArg& out, std::vector<py::object>& keep) {
    out.text.clear();
    out.offsets.clear();
    out.col = fc::IdColumn{};
    if (ids.is_none()) return;
    if (py::isinstance<py::array>(ids)) {
        using Ints = py::array_t<int64_t, py::array::c_style>;
        if (py::isinstance<Ints>(ids) && py::reinterpret_borrow<py::array>(ids).ndim() == 1) {
            auto a = py::reinterpret_borrow<Ints>(ids);
            keep.push_back(a);
            out.col.ints = a.data();
            out.col.n = static_cast<size_t>(a.shape(0));
            return;
        }
        packed_array_ids(py::reinterpret_borrow<py::array>(ids), NameFn(name), out, keep);
        return;
    }
    if (!PyList_Check(ids.ptr()) && !PyTuple_Check(ids.ptr())) {
        if (arrow_ids(ids, NameFn(name), out, keep)) return;
        throw std::invalid_argument(name() + " must be " + kIdForms + ", got " + type_name(ids));
    }
    PyObject* seq = ids.ptr();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject** items = PySequence_Fast_ITEMS(seq);
    out.offsets.resize(static_cast<size_t>(n) + 1);
    out.offsets[0] = 0;
    // The str objects of a request's ids sit wherever Python allocated them, and the
    // first touch of each (its type, then its bytes) was ~10% of a W1 request on UUID ids
    // (perf): fetch the header and first bytes of an item kAhead ahead of the copy.
    constexpr Py_ssize_t kAhead = 8;
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (i + kAhead < n) {
            const char* ahead = reinterpret_cast<const char*>(items[i + kAhead]);
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + 64);
        }
        PyObject* item = items[i];
        Py_ssize_t len = 0;
        const char* p = nullptr;
        if (PyUnicode_Check(item) && PyUnicode_IS_COMPACT_ASCII(item)) {  // the common case, no call
            p = static_cast<const char*>(PyUnicode_DATA(item));
            len = PyUnicode_GET_LENGTH(item);
        } else if (PyUnicode_Check(item)) {
            p = PyUnicode_AsUTF8AndSize(item, &len);
        }
        if (!p && PyUnicode_Check(item)) {
            PyErr_Clear();
            throw std::invalid_argument(name() + "[" + std::to_string(i) + "] is not valid Unicode text (a lone "
                                        "surrogate); pass ids that encode as UTF-8");
        }
        if (!p) {
            PyErr_Clear();
            throw std::invalid_argument(name() + "[" + std::to_string(i) + "] must be str, got " +
                                        type_name(item) + "; pass ids as a list of str or an int64 numpy array");
        }
        out.text.append(p, static_cast<size_t>(len));
        out.offsets[static_cast<size_t>(i) + 1] = out.text.size();
    }
    out.col.text = out.text.data();
    out.col.offsets = out.offsets.data();
    out.col.n = static_cast<size_t>(n);
}


// The key text of one id given as str or int (ints as decimal).
std::string id_text(py::handle id, const char* name);

}  // namespace fc::bind
