#include "matrix_json.h"

#include <charconv>
#include <cmath>

namespace fc {
namespace {

void append_escaped(std::string& out, std::string_view s) {
    static const char* hex = "0123456789abcdef";
    out.push_back('"');
    size_t run = 0;  // start of the current run of characters that need no escape
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(s.data() + run, i - run);
        run = i + 1;
        switch (c) {
            case '"': out.append("\\\""); break;
            case '\\': out.append("\\\\"); break;
            case '\n': out.append("\\n"); break;
            case '\r': out.append("\\r"); break;
            case '\t': out.append("\\t"); break;
            default:
                out.append("\\u00");
                out.push_back(hex[c >> 4]);
                out.push_back(hex[c & 15]);
        }
    }
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

inline void append_float(std::string& out, float v) {
    if (!std::isfinite(v)) {
        out.append("null");
        return;
    }
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back as v
    out.append(buf, static_cast<size_t>(res.ptr - buf));
}

void append_label(std::string& out, const RowLabels& rows, size_t i) {
    if (rows.text) {
        std::string label(rows.prefix);
        label.append(rows.text + rows.text_offsets[i], rows.text_offsets[i + 1] - rows.text_offsets[i]);
        append_escaped(out, label);
    } else if (rows.ints) {
        std::string label(rows.prefix);
        label += std::to_string(rows.ints[i]);
        append_escaped(out, label);
    } else {
        out.append("\"row:");
        out.append(std::to_string(i));
        out.push_back('"');
    }
}

std::vector<std::string> escaped_keys(const std::vector<std::string>& names) {
    std::vector<std::string> out;
    out.reserve(names.size());
    for (const auto& name : names) {
        std::string key;
        append_escaped(key, name);
        key.push_back(':');
        out.push_back(std::move(key));
    }
    return out;
}

}  // namespace

void write_keyed_json(std::string& out, const float* values, const uint8_t* reasons, size_t n, size_t f,
                      const std::vector<std::string>& columns, const RowLabels& rows,
                      const std::vector<std::string>& reason_names) {
    const std::vector<std::string> keys = escaped_keys(columns);
    std::vector<std::string> reason_text;
    for (const auto& name : reason_names) {
        std::string quoted;
        append_escaped(quoted, name);
        reason_text.push_back(std::move(quoted));
    }
    size_t key_bytes = 0;
    for (const auto& key : keys) key_bytes += key.size();
    out.reserve(out.size() + n * (key_bytes + f * 12 + 48));  // one allocation for the usual sizes
    out.append("\"features\":{");
    for (size_t i = 0; i < n; ++i) {
        if (i) out.push_back(',');
        append_label(out, rows, i);
        out.append(":{");
        const float* row = values + i * f;
        for (size_t j = 0; j < f; ++j) {
            if (j) out.push_back(',');
            out.append(keys[j]);
            append_float(out, row[j]);
        }
        out.push_back('}');
    }
    out.append("},\"missing\":{");
    bool first_row = true;
    for (size_t i = 0; i < n; ++i) {
        const uint8_t* r = reasons + i * f;
        bool first_cell = true;
        for (size_t j = 0; j < f; ++j) {
            if (!r[j]) continue;
            if (first_cell) {
                if (!first_row) out.push_back(',');
                first_row = false;
                append_label(out, rows, i);
                out.append(":{");
                first_cell = false;
            } else {
                out.push_back(',');
            }
            out.append(keys[j]);
            out.append(r[j] < reason_text.size() ? reason_text[r[j]] : std::string("\"unknown\""));
        }
        if (!first_cell) out.push_back('}');
    }
    out.push_back('}');
}

void write_columnar_json(std::string& out, const float* values, const uint8_t* reasons, size_t n, size_t f,
                         const std::vector<std::string>& columns, const RowLabels& rows) {
    out.reserve(out.size() + n * f * 12 + n * 32);
    out.append("\"columns\":[");
    for (size_t j = 0; j < f; ++j) {
        if (j) out.push_back(',');
        append_escaped(out, columns[j]);
    }
    out.append("],\"rows\":[");
    for (size_t i = 0; i < n; ++i) {
        if (i) out.push_back(',');
        append_label(out, rows, i);
    }
    out.append("],\"values\":[");
    for (size_t i = 0; i < n; ++i) {
        out.append(i ? ",[" : "[");
        for (size_t j = 0; j < f; ++j) {
            if (j) out.push_back(',');
            append_float(out, values[i * f + j]);
        }
        out.push_back(']');
    }
    out.append("],\"reasons\":[");
    char buf[4];
    for (size_t i = 0; i < n; ++i) {
        out.append(i ? ",[" : "[");
        for (size_t j = 0; j < f; ++j) {
            if (j) out.push_back(',');
            auto res = std::to_chars(buf, buf + sizeof buf, static_cast<unsigned>(reasons[i * f + j]));
            out.append(buf, static_cast<size_t>(res.ptr - buf));
        }
        out.push_back(']');
    }
    out.push_back(']');
}

}  // namespace fc
