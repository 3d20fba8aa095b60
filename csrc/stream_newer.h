// The online store's newest-row rule for a batch of puts, natively (featurecore/online/writer.py
// OnlineWriter._without_older): the stream consumer checks ~1,000 rows against the stored
// ones per micro-batch, ten times a second.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace fc {

// keep[i] = 1 where rows[i] may replace the stored row stored[i]: nothing is stored
// (stored_absent[i] != 0), the stored row is not a row of the same schema (its length is
// neither rows[i]'s nor 4 bytes shorter, a v1 row; or its header past the version byte
// differs; or its version does not fit its length) or is damaged (its checksum fails: its
// timestamps cannot be trusted), or its (feature_timestamp, generated_at) is not later
// than rows[i]'s. Rows start with an 8-byte header, feature_timestamp_us and
// generated_at_us (little-endian; codec.h). Sizes must match (the binding checks).
void rows_not_older(const std::vector<std::string_view>& rows, const std::vector<std::string_view>& stored,
                    const std::vector<uint8_t>& stored_absent, uint8_t* keep);

}  // namespace fc
