// JSON text of a served feature matrix, for the HTTP server's JSON responses.
//
// Contract: writes only the matrix part of a response (the caller adds the
// feature set and diagnostics around it). Floats are written with
// std::to_chars' shortest form that reads back as the same float32; NaN and
// +-inf are written as null (JSON has neither). Strings (columns, row labels,
// reason names) are JSON-escaped. Pure C++, no Python: callers may release the
// GIL around it. Not thread-shared state: each call owns its output string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fc {

// Row labels: `prefix` + id (text ids when `text_offsets` is set, else int64 ids,
// else "row:" + row number when both are null).
struct RowLabels {
    std::string_view prefix;
    const char* text = nullptr;
    const uint64_t* text_offsets = nullptr;  // n + 1 offsets into text
    const int64_t* ints = nullptr;
};

// Keyed form: "features":{"<label>":{"<col>":v,...},...},"missing":{"<label>":{"<col>":"<reason>"}}
// (only rows with a missing cell appear under "missing").
void write_keyed_json(std::string& out, const float* values, const uint8_t* reasons, size_t n, size_t f,
                      const std::vector<std::string>& columns, const RowLabels& rows,
                      const std::vector<std::string>& reason_names);

// Columnar form: "columns":[...],"rows":[...],"values":[[...],...],"reasons":[[...],...]
// (reasons as their uint8 codes).
void write_columnar_json(std::string& out, const float* values, const uint8_t* reasons, size_t n, size_t f,
                         const std::vector<std::string>& columns, const RowLabels& rows);

}  // namespace fc
