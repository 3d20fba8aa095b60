// Entity keys (docs/ARCHITECTURE.md, "Entity keys") and the 64-bit key hash.
//
// key = 0x01 u8(len tenant) tenant u8(len entity_type) entity_type id_utf8.
// Tenant and entity type are length-prefixed, so no id can alias another
// tenant's or entity type's key. Integer ids are their decimal text.
//
// Pair entities (user_item) use pair_id: every component but the last is
// written as "<utf8 byte length>:<component>", the last one as is, e.g.
// pair_id("u1", "i9") == "2:u1i9". Reading the decimal length up to the first
// ':' recovers each component, so the encoding is injective.
//
// All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fc {

constexpr char kKeyFormat = '\x01';
// The longest tenant or entity type, in UTF-8 bytes (its length is one byte of the key).
constexpr size_t kMaxNameBytes = 255;

// Appends the key prefix; throws std::invalid_argument if tenant or entity
// type is longer than 255 bytes.
void append_key_prefix(std::string& out, std::string_view tenant, std::string_view entity_type);

std::string encode_key(std::string_view tenant, std::string_view entity_type, std::string_view id);

// Appends v as decimal text (the id text of an integer id).
void append_int_id(std::string& out, int64_t v);

// Appends one non-last pair component: "<byte length>:<component>".
void append_pair_component(std::string& out, std::string_view component);

std::string pair_id(const std::vector<std::string_view>& components);

// A column of texts laid out as Arrow's large_string: text i is
// data[offsets[i], offsets[i + 1]).
struct TextColumn {
    const int64_t* offsets;
    const char* data;
    size_t n;
};

// pair_id of every row of the component columns (all of length n), appended to
// data with offsets[0..n] (offsets[0] = 0); an Arrow large_string layout.
void join_pair_ids(const std::vector<TextColumn>& components, std::string& data, int64_t* offsets);

// The inverse of pair_id for one id of n_components: begin[c] and length[c] of
// each component inside id. False (spans unspecified) if id is not such a pair id.
bool split_pair_id(std::string_view id, size_t n_components, size_t* begin, size_t* length);

// Fast, well-mixed 64-bit hash of key bytes (wyhash-style multiply-fold).
uint64_t hash_bytes(const char* p, size_t n);

// The resident index's key hash. A key's prefix (format byte, tenant, entity type)
// and its id are hashed apart, and an id that is the canonical decimal text of a
// non-negative int64 ("0", "42", never "042" or "+4") is hashed as that integer:
// a request's int ids hash without formatting a digit, and 42 and "42" hash alike.
//   hash_key(prefix + id) == hash_id_text(hash_bytes(prefix), id)
//                         == hash_id_int(hash_bytes(prefix), v) when id is v's text.
// Bytes that are not a well-formed key hash as a whole (hash_bytes).
uint64_t hash_key(const char* key, size_t len);
// True (and v set) if id is the canonical decimal text of a non-negative int64: the ids
// hash_id_text hashes as integers.
bool parse_int_id(const char* id, size_t len, int64_t& v);
uint64_t hash_id_int(uint64_t prefix_hash, int64_t v);
// out[i] = hash_id_int(prefix_hash, v[i]) for i < n (a request's int ids, in one loop).
void hash_ids_int(uint64_t prefix_hash, const int64_t* v, size_t n, uint64_t* out);
uint64_t hash_id_text(uint64_t prefix_hash, const char* id, size_t len);
// Bytes of key's prefix (3 + tenant + entity type), or 0 if key is not well formed.
size_t key_prefix_length(const char* key, size_t len);

// True when [p, p + n) is well-formed UTF-8 without surrogates (what Python's strict
// decoder accepts).
bool valid_utf8(const uint8_t* p, size_t n);

}  // namespace fc
