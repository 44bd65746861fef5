// Model fingerprint: ties a PreMoe pattern store to the checkpoint it was profiled on. It hashes config.json
// (parsed and re-serialised, so whitespace and key order do not matter) and every tensor's name, dtype and
// shape. It reads no weight bytes, so it is cheap for any model size; it does not detect changed weight values.
#pragma once

#include <cstdint>
#include <string>

namespace sy::prune {

// "fnv1a64:" + 16 hex digits. Throws IoError / FormatError when DIR is not a readable checkpoint.
std::string model_fingerprint(const std::string& dir);

// 64-bit FNV-1a of bytes, continuing from `hash` (the offset basis by default).
uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = 0xcbf29ce484222325ull);
std::string hex64(uint64_t v);

}  // namespace sy::prune
