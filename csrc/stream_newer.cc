#include "stream_newer.h"

#include <cstring>

#include "codec.h"

namespace fc {

namespace {

constexpr size_t kHead = 24;         // header, feature_timestamp_us, generated_at_us
constexpr size_t kV1Shorter = 4;     // a v1 row has no CRC-32C trailer
constexpr uint64_t kVersionV1 = 1;

struct Head {
    uint64_t header;
    int64_t feature_ts;
    int64_t generated_at;
};

Head head_of(std::string_view row) {
    Head h;
    std::memcpy(&h.header, row.data(), 8);
    std::memcpy(&h.feature_ts, row.data() + 8, 8);
    std::memcpy(&h.generated_at, row.data() + 16, 8);
    return h;
}

}  // namespace

void rows_not_older(const std::vector<std::string_view>& rows, const std::vector<std::string_view>& stored,
                    const std::vector<uint8_t>& stored_absent, uint8_t* keep) {
    for (size_t i = 0; i < rows.size(); ++i) {
        keep[i] = 1;
        if (stored_absent[i]) continue;
        const std::string_view row = rows[i], old = stored[i];
        const size_t size = row.size();
        const bool same_length = old.size() == size, v1_length = size >= kV1Shorter && old.size() == size - kV1Shorter;
        if ((!same_length && !v1_length) || old.size() < kHead || size < kHead) continue;
        const Head o = head_of(old), n = head_of(row);
        const bool newer = o.feature_ts > n.feature_ts || (o.feature_ts == n.feature_ts && o.generated_at > n.generated_at);
        if (!newer) continue;
        const uint64_t version = same_length ? (n.header & 0xFF) : kVersionV1;
        const bool same = (o.header >> 8) == (n.header >> 8) && (o.header & 0xFF) == version &&
                          row_checksum_ok(reinterpret_cast<const uint8_t*>(old.data()), old.size());
        keep[i] = same ? 0 : 1;
    }
}

}  // namespace fc
