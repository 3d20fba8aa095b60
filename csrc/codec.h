// RowLayout and row format v2 (docs/ARCHITECTURE.md, "Row format v2").
//
// A RowLayout is an immutable list of (dtype, dim); it fixes the slot layout of a
// group (every feature becomes `dim` float32 slots, dim = 1 except embeddings)
// and the exact byte length of every encoded row. Schemas are shared between
// tables through std::shared_ptr<const RowLayout> and are safe to read from any
// thread.
//
// decode_row never trusts its input: any length, version, reserved byte,
// feature count, fingerprint, checksum or padding-bit mismatch yields
// kNotComputed, and it never reads outside [data, data + len). Rows are written
// as v2 (v1 + a CRC-32C trailer); v1 rows (no trailer) still decode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "reasons.h"

namespace fc {

constexpr uint8_t kFormatVersion = 2;    // written
constexpr uint8_t kFormatVersionV1 = 1;  // still read: no checksum trailer
// version u8, reserved u8, n_features u16, fingerprint u32, three i64 timestamps.
constexpr size_t kHeaderBytes = 32;
// v2 trailer: u32 little-endian CRC-32C of every byte before it.
constexpr size_t kChecksumBytes = 4;

// zlib-compatible CRC-32 (so Python can check fingerprints with zlib.crc32).
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);
// CRC-32C (Castagnoli, the iSCSI/ext4 checksum; crc32c("123456789") == 0xE3069283).
// Uses the SSE4.2 instruction when the CPU has it, a table otherwise.
uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc = 0);

class RowLayout {
  public:
    // Throws std::invalid_argument for an unknown dtype, a dim that is not 1 for
    // a non-embedding feature, an embedding dim of 0, or more than 65535 features.
    RowLayout(std::vector<uint8_t> dtypes, std::vector<uint32_t> dims);

    size_t n_features() const { return dtypes_.size(); }
    size_t n_slots() const { return slot_offsets_.back(); }
    uint32_t fingerprint() const { return fingerprint_; }
    size_t bitmap_bytes() const { return (n_features() + 7) / 8; }
    // Exact length of every encoded (v2) row of this schema; a v1 row is
    // kChecksumBytes shorter.
    size_t row_bytes() const { return row_bytes_; }
    const std::vector<uint8_t>& dtypes() const { return dtypes_; }
    const std::vector<uint32_t>& dims() const { return dims_; }
    // slot_offsets()[j] is feature j's first slot; the last entry is n_slots.
    const std::vector<int32_t>& slot_offsets() const { return slot_offsets_; }
    // Byte width of feature j's stored value.
    size_t value_bytes(size_t j) const;
    // Same slot layout (dtypes and dims); the fingerprint alone is a CRC and collides.
    bool same_layout(const RowLayout& o) const {
        return this == &o || (fingerprint_ == o.fingerprint_ && dtypes_ == o.dtypes_ && dims_ == o.dims_);
    }

  private:
    std::vector<uint8_t> dtypes_;
    std::vector<uint32_t> dims_;
    std::vector<int32_t> slot_offsets_;
    uint32_t fingerprint_;
    size_t row_bytes_;
};

// Typed input columns of a batch of n rows, one pointer per feature in the C
// layout of its dtype: float32, float64, int64, bool (1 byte), int32 code, or
// float32 (n, dim). `nulls` is (n, n_features) uint8 or nullptr for "none".
// feature_ts and published_at are read by encode_rows only.
struct ColumnsIn {
    std::vector<const void*> values;
    const uint8_t* nulls = nullptr;
    const int64_t* feature_ts = nullptr;
    const int64_t* generated_at = nullptr;
    const int64_t* published_at = nullptr;
    size_t n = 0;
};

// Encodes row r into out[r] (schema.row_bytes() bytes each; the buffers may be
// anywhere, e.g. the payloads of freshly allocated Python bytes, so no big
// temporary is needed). Null cells are written as zero bytes.
void encode_rows(const RowLayout& schema, const ColumnsIn& in, uint8_t* const* out);

// Converts feature j of rows [r0, r1) of `in` to float32 slots (dim each): row
// r0 + i goes to out + i * stride (in floats). Nulls are not looked at.
void column_to_slots(const RowLayout& schema, const ColumnsIn& in, size_t j, size_t r0, size_t r1, float* out,
                     size_t stride);

// False when `data` is a v2 row (version byte 2) whose CRC-32C trailer does not match;
// true otherwise (a v1 row has no checksum; other checks are decode_row's). The writer
// uses it to let a damaged stored row be replaced whatever timestamps it claims.
bool row_checksum_ok(const uint8_t* data, size_t len);

// Decodes one row into slots (n_slots floats; nulls become NaN), null_bits
// (bitmap_bytes() bytes: feature j is bit j % 8 of byte j / 8, as in the row)
// and ts (feature_ts, generated_at, published_at).
// Returns kPresent, or kNotComputed if the bytes are not a valid v2 row (checksum
// included) or v1 row of this schema (outputs are then unspecified).
uint8_t decode_row(const RowLayout& schema, const uint8_t* data, size_t len, float* slots,
                   uint8_t* null_bits, int64_t* ts);

}  // namespace fc
