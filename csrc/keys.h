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

// Appends the key prefix; throws std::invalid_argument if tenant or entity
// type is longer than 255 bytes.
void append_key_prefix(std::string& out, std::string_view tenant, std::string_view entity_type);

std::string encode_key(std::string_view tenant, std::string_view entity_type, std::string_view id);

// Appends v as decimal text (the id text of an integer id).
void append_int_id(std::string& out, int64_t v);

// Appends one non-last pair component: "<byte length>:<component>".
void append_pair_component(std::string& out, std::string_view component);

std::string pair_id(const std::vector<std::string_view>& components);

// Fast, well-mixed 64-bit hash of key bytes (wyhash-style multiply-fold).
uint64_t hash_bytes(const char* p, size_t n);

}  // namespace fc
