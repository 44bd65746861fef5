// parse_safetensors: the pure, bounds-checked parser of a safetensors file image (header length, JSON header,
// dtypes, shapes, offsets, overlaps). It never touches the file system and never trusts a number it read;
// the fuzz target calls it directly. Mapping files and finding shards live in safetensors_file.cc.
#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

namespace {

using nlohmann::json;

constexpr const char* kComponent = "safetensors";
// The reference implementation refuses headers above 100 MB; a real header is a few MB at most.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;
// Nesting deeper than this cannot be a valid header ({"name": {"shape": [..]}} is depth 3).
constexpr int kMaxJsonDepth = 8;

// a * b, or false when it overflows uint64_t.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// A JSON number that is a non-negative integer (not a float, not negative), or false.
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

// Parses the JSON text, rejecting deep nesting and duplicate top-level keys (nlohmann would keep the last one
// silently, hiding the first tensor's bytes from the overlap check).
json parse_json(const char* text, size_t len, const std::string& what) {
  std::set<std::string> top_keys;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if (depth > kMaxJsonDepth) {
      throw make_error<FormatError>(kComponent, "header of ", what, " nests JSON deeper than ", kMaxJsonDepth,
                                    " levels; the file is corrupt or not a safetensors file");
    }
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!top_keys.insert(key).second) {
        throw make_error<FormatError>(kComponent, "header of ", what, " lists tensor \"", key,
                                      "\" twice; the file is corrupt");
      }
    }
    return true;
  };
  try {
    return json::parse(text, text + len, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw make_error<FormatError>(kComponent, "header of ", what, " is not valid JSON (", e.what(),
                                  "); the file is corrupt or not a safetensors file");
  }
}

std::map<std::string, std::string> parse_metadata(const json& v, const std::string& what) {
  SY_REQUIRE(v.is_object(), FormatError, kComponent, "\"__metadata__\" in ", what,
             " must be an object of strings, got ", v.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    SY_REQUIRE(value.is_string(), FormatError, kComponent, "\"__metadata__\" entry \"", key, "\" in ", what,
               " must be a string, got ", value.type_name());
    out[key] = value.get<std::string>();
  }
  return out;
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, uint64_t data_bytes, const std::string& what) {
  auto fail = [&](const auto&... args) {
    return make_error<FormatError>(kComponent, "tensor \"", name, "\" in ", what, ": ", args...);
  };
  if (!v.is_object()) throw fail("entry must be an object, got ", v.type_name());
  SafetensorsEntry e;
  e.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) throw fail("missing or non-string \"dtype\"");
  try {
    e.dtype = dtype_from_safetensors(dt->get_ref<const std::string&>());
  } catch (const FormatError& err) {
    throw fail("unknown dtype \"", dt->get_ref<const std::string&>(),
               "\" (supported: F32, BF16, F16, I8, U8, I32, I64)");
  }

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) throw fail("missing \"shape\" or it is not a list");
  uint64_t numel = 1;
  for (const json& d : *sh) {
    uint64_t n = 0;
    if (!as_u64(d, &n) || n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw fail("shape ", sh->dump(), " must be a list of non-negative integers");
    }
    e.shape.push_back(static_cast<int64_t>(n));
    // Every partial product must fit int64_t, so that shape_numel() never overflows on an accepted shape.
    if (!checked_mul(numel, n, &numel) || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw fail("shape ", sh->dump(), " has too many elements");
    }
  }
  uint64_t need = 0;
  if (!checked_mul(numel, dtype_size(e.dtype), &need)) throw fail("shape ", sh->dump(), " has too many elements");

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], &e.begin) ||
      !as_u64((*off)[1], &e.end)) {
    throw fail("\"data_offsets\" must be a list of two non-negative integers [begin, end]");
  }
  if (e.begin > e.end) throw fail("data_offsets [", e.begin, ", ", e.end, "] end before they begin");
  if (e.end > data_bytes) {
    throw fail("data_offsets [", e.begin, ", ", e.end, "] run past the end of the data section (", data_bytes,
               " bytes); the file is truncated or corrupt");
  }
  if (e.end - e.begin != need) {
    throw fail("data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin, " bytes but shape ",
               shape_str(e.shape), " of ", dtype_to_safetensors(e.dtype), " needs ", need,
               "; the file is corrupt or was written by a faulty tool");
  }
  return e;
}

}  // namespace

SafetensorsHeader parse_safetensors(const uint8_t* data, uint64_t size, const std::string& what) {
  SY_REQUIRE(size >= 8, FormatError, kComponent, what, " is ", size,
             " bytes, too short for the 8-byte header length; the file is truncated or not a safetensors file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian u64
  SY_REQUIRE(n <= size - 8, FormatError, kComponent, "header length ", n, " runs past the end of ", what, " (",
             size, " bytes); the file is truncated or not a safetensors file");
  SY_REQUIRE(n <= kMaxHeaderBytes, FormatError, kComponent, "header length ", n, " of ", what,
             " exceeds the limit of ", kMaxHeaderBytes, " bytes; the file is corrupt");
  SY_REQUIRE(n >= 2 && data[8] == '{', FormatError, kComponent, "header of ", what,
             " does not start with '{'; the file is not a safetensors file");

  SafetensorsHeader h;
  h.header_bytes = n;
  const uint64_t data_bytes = size - 8 - n;
  json root = parse_json(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n), what);
  SY_REQUIRE(root.is_object(), FormatError, kComponent, "header of ", what, " must be a JSON object, got ",
             root.type_name());

  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      h.metadata = parse_metadata(value, what);
    } else {
      h.entries.push_back(parse_entry(key, value, data_bytes, what));
    }
  }

  std::sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Zero-size tensors occupy no bytes and cannot overlap anything.
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& e : h.entries) {
    if (e.begin == e.end) continue;
    if (prev && e.begin < prev->end) {
      throw make_error<FormatError>(kComponent, "tensors \"", prev->name, "\" [", prev->begin, ", ", prev->end,
                                    ") and \"", e.name, "\" [", e.begin, ", ", e.end, ") overlap in ", what,
                                    "; the file is corrupt");
    }
    prev = &e;
  }
  return h;
}

}  // namespace sy
