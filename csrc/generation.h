// Generation files: a resident group as one immutable, page-aligned file that any
// number of processes map read-only and serve from directly (ResidentGroup, resident.h).
//
// The file IS the serving structure: its sections are the bytes of a ResidentGroup's
// row records, null bitmaps, hash index and long-key arena, so mapping it copies
// nothing. Layout (little-endian, every section starting on a 4096-byte page):
//
//   header (header_bytes, a multiple of 4096):
//     char     magic[8] = "FCGENv1\n"
//     u32      format_version (= 4)      u32 header_bytes
//     u64      file_bytes                u64 changelog_sequence (changes up to it are in the rows)
//     u32      schema_fingerprint        u32 n_features   (part 0's; n_features: of every part)
//     u64      n_rows, record_bytes, extra_bytes, null_bytes, index_slots, arena_bytes, key_bytes
//     u64      prefix_bytes
//     u64      section_offset[4]         records, nulls, index, arena
//     u32      body_crc                  see body_checksum()
//     u32      header_crc                CRC-32C of the header region with this field zeroed
//     u32      n_parts                   u32 zero
//     part[n_parts]: u32 schema_fingerprint, u32 n_features, u64 offset, extra_bytes, null_bytes, null_offset
//     u8       dtypes[n_features]        u32 dims[n_features]   (the parts' schemas, in part order)
//     char     key_prefix[prefix_bytes]  the key prefix the records' short keys leave out (resident.h)
//   records | null bitmaps | index slots | key arena        (each padded with zeros to a page)
//
// Parts: one file may hold several groups of one entity (an entity table): row r's
// record (record_bytes) holds every group's part of that entity side by side, so a
// request reading all of them reads one record. Part k is laid out like a record of
// its own (GroupTable: a 16-byte head with generated_at, status and any_null, then
// extra_bytes, then the slots) starting at `offset` in the record; part 0 starts at 0
// and its head and extra bytes hold the row's key (resident.h; extra_bytes in the
// fixed header is part 0's). A file of one group has one part. Every part holds every
// row (the groups held the same keys when the file was written).
// null_bytes (the sum of the parts') is 0 (and the null bitmap section empty) when no
// row has a null; part k's bitmaps (its null_bytes each, 0: none) start at null_offset
// in the section: a reader reads a row's bitmap only when its any_null byte is set
// (group_table.h).
//
// A Generation is the mapping of one such file: immutable, so any number of threads
// read it without a lock; the mapping goes when the last shared_ptr to it does.
//
// A process maps each file once: while a verified Generation of a file is alive, opening
// the same file again (same device, inode, size, mtime and ctime) returns it instead of
// mapping and checksumming the file again. So do the children of a fork: a parent that
// maps the generations before forking its workers (Generation::map; the gunicorn
// --preload shape) checks each file once, and every worker serves from the inherited
// mapping from its first request. A file replaced or rewritten since (another inode, a
// new size or timestamp) is mapped and verified anew.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "codec.h"

namespace fc {

// A generation file that is missing, truncated, corrupt or of another schema (not a
// caller's mistake: the file is refused, and the caller falls back to RocksDB).
class GenerationError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

constexpr size_t kPageBytes = 4096;
// 2: keys inline from the record's owner bytes (resident.h); 3: 8-byte index slots, no
// null bitmap section when no row has a null, keys stored without the group's key prefix
// and int ids as int64 (resident.h), unpadded records from four cache lines on;
// 4: parts (several groups of one entity in one record).
constexpr uint32_t kGenerationFormat = 4;
// Bytes of one hash index slot (resident.h's IndexSlot).
constexpr size_t kIndexSlotBytes = 8;

// The four sections, in file order.
enum GenerationSection { kRecords = 0, kNulls = 1, kIndex = 2, kArena = 3, kSections = 4 };

// One group's part of a generation's records (see Parts above).
struct GenerationPart {
    uint32_t schema_fingerprint = 0;
    uint32_t n_features = 0;
    uint64_t offset = 0;       // of its head in a record
    uint64_t extra_bytes = 0;  // between its head and its slots
    uint64_t null_bytes = 0;   // of its bitmap per row (0: no bitmaps)
    uint64_t null_offset = 0;  // of its bitmaps in the null bitmap section
};

struct GenerationInfo {
    uint32_t format_version = kGenerationFormat;
    uint64_t file_bytes = 0;
    uint64_t changelog_sequence = 0;
    uint32_t schema_fingerprint = 0;
    uint64_t n_rows = 0;
    uint64_t record_bytes = 0;
    uint64_t extra_bytes = 0;
    uint64_t null_bytes = 0;
    uint64_t index_slots = 0;
    uint64_t arena_bytes = 0;
    uint64_t key_bytes = 0;
    std::string key_prefix;  // the key prefix (keys.h) of the group's short keys, or empty
    std::vector<GenerationPart> parts;
};

// The sections' bytes, to be written.
struct GenerationParts {
    const void* data[kSections] = {nullptr, nullptr, nullptr, nullptr};
    size_t bytes[kSections] = {0, 0, 0, 0};
};

// Writes a generation file at `path` (created; must not exist) and fsyncs it: schemas[k]
// is part k's (info.parts[k]: offset, extra_bytes, null_bytes, null_offset; the
// fingerprints and feature counts are taken from the schemas). Throws
// std::invalid_argument if the path cannot be created, GenerationError on an I/O error
// (the partial file is removed).
void write_generation(const std::string& path, const std::vector<const RowLayout*>& schemas, GenerationInfo info,
                      const GenerationParts& sections);

class Generation {
  public:
    // Maps `path` read-only and checks the header, the section bounds and that part
    // `part` has the schema's layout (and, with verify_body, the body checksum). Throws
    // GenerationError naming what is wrong.
    // A verified mapping of this process is reused (see above); verify_body=false maps
    // without the body checksum (and shares the mapping with no one).
    static std::shared_ptr<const Generation> open(const std::string& path, const RowLayout& schema,
                                                  bool verify_body = true, size_t part = 0);
    // Maps `path` and checks it whole (header, sections, body checksum) without a schema
    // to match, or returns this process's live verified mapping of it. Throws GenerationError.
    static std::shared_ptr<const Generation> map(const std::string& path);
    // Reads the header of `path` and verifies the whole file without a schema to match
    // (featurecore snapshot verify). Throws GenerationError.
    static GenerationInfo verify(const std::string& path);
    Generation(const Generation&) = delete;
    Generation& operator=(const Generation&) = delete;
    ~Generation();

    const GenerationInfo& info() const { return info_; }
    const uint8_t* section(GenerationSection s) const { return base_ + offsets_[s]; }
    const std::string& path() const { return path_; }

  private:
    Generation() = default;
    // A Generation over the mapping [base, base + size) after checking its header and
    // sections (not the body checksum); the caller hands the mapping over on success.
    static std::shared_ptr<const Generation> adopt(const std::string& path, const uint8_t* base, size_t size);
    std::string path_;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    GenerationInfo info_;
    uint64_t offsets_[kSections] = {0, 0, 0, 0};
    uint32_t n_features_ = 0;
    uint32_t header_bytes_ = 0;
    uint32_t body_crc_ = 0;
};

}  // namespace fc
