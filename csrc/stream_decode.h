// Stream messages (msgpack) -> typed columns, for the common shape only.
//
// featurecore/streams/decode.py documents the message format. This parser accepts a
// message only in the shape the Python decoder handles most often: a msgpack map, or a
// non-empty array of maps, each with the keys entity_id (str or int >= 0),
// feature_timestamp (int), optionally generated_at (int) and tenant (str, the same in
// every row), and values: a map naming exactly the group's features in schema order,
// whose cells are numbers (float features: int or float; int features: int; bool
// features: bool; categorical features: a str label). Anything else (JSON, nil cells, other key orders, wrong types,
// duplicate keys, invalid UTF-8, trailing bytes ...) is left to the Python decoder,
// which gives the same rows or refuses with its own reason: this parser never refuses.
//
// Pure and thread-safe: no Python, callable without the GIL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fc {

enum class StreamCell : char { Float = 'f', Int = 'i', Bool = 'b', Label = 'c' };

// One payload: its bytes (not owned; alive while decoding).
struct StreamPayload {
    const uint8_t* data;
    size_t size;
};

// The rows of the accepted messages, in message order (ids as text, as write's
// normalize_ids gives a list of ids); the cells of the j-th column of
// each kind in floats[j], ints[j], bools[j] or labels[j].
struct StreamColumns {
    std::vector<uint8_t> accepted;      // per message
    std::vector<int64_t> rows;          // per message (0 when not accepted)
    std::vector<std::string> tenants;   // per message ("" when not accepted)
    std::vector<std::string> ids;       // per row: the id text (an int id's decimal text)
    std::vector<int64_t> feature_ts, generated_at;
    std::vector<std::vector<double>> floats;
    std::vector<std::vector<int64_t>> ints;
    std::vector<std::vector<uint8_t>> bools;
    std::vector<std::vector<std::string>> labels;
};

// Decodes every payload; generated_at defaults to published_us. names are UTF-8.
StreamColumns decode_stream_payloads(const std::vector<StreamPayload>& payloads, const std::vector<std::string>& names,
                                     const std::string& kinds, int64_t published_us);

}  // namespace fc
