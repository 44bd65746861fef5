// UTF-8 and Unicode property helpers for the tokenizer, plus the GPT-2 byte-level alphabet and JSON field
// accessors. Character properties come from ICU so they match Rust's char methods used by `tokenizers`.
// Not a general Unicode library: only what the tokenizer components need.
#include <unicode/uchar.h>

#include <array>

#include "tokenizer_internal.h"

namespace sy::tok {

size_t valid_utf8_prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    char32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return n;
}

char32_t next_code_point(std::string_view s, size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  char32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  while (i < n) {
    size_t good = valid_utf8_prefix(bytes.substr(i));
    out.append(bytes.data() + i, good);
    i += good;
    if (i >= n) break;
    // Maximal subpart of an ill-formed sequence (Unicode 3.9 / WHATWG): the longest prefix of a
    // well-formed sequence, or one byte. It is replaced by a single U+FFFD.
    unsigned char c = p[i];
    size_t len = 1;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need = 0;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    for (size_t k = 0; k < need && i + len < n; ++k) {
      unsigned char t = p[i + len];
      if (k == 0 ? (t < lo || t > hi) : (t & 0xC0) != 0x80) break;
      ++len;
    }
    out += "\xEF\xBF\xBD";
    i += len;
  }
  return out;
}

bool is_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  int8_t t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return u_isUAlphabetic(static_cast<UChar32>(c)) || is_numeric(c);
}

bool is_nonspacing_mark(char32_t c) { return u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK; }

namespace {
struct ByteMaps {
  std::array<char32_t, 256> to_char{};
  ByteMaps() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
    }
  }
};
const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}
}  // namespace

char32_t byte_to_char(uint8_t b) { return byte_maps().to_char[b]; }

int char_to_byte(char32_t c) {
  if ((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)) return static_cast<int>(c);
  if (c >= 256 && c < 256 + 68) {
    // The non-printable bytes in increasing order: 0..32, 127..160, 173.
    unsigned k = c - 256;
    if (k <= 32) return static_cast<int>(k);
    if (k <= 32 + 34) return static_cast<int>(127 + (k - 33));
    return 173;
  }
  return -1;
}

char32_t single_char(const std::string& s, const char* what) {
  SY_REQUIRE(!s.empty() && valid_utf8_prefix(s) == s.size(), FormatError, kComponent, what,
             " must be one character; fix the tokenizer.json");
  size_t i = 0;
  char32_t c = next_code_point(s, i);
  SY_REQUIRE(i == s.size(), FormatError, kComponent, what, " must be one character, got \"", s,
             "\"; fix the tokenizer.json");
  return c;
}

const Json& require_field(const Json& j, const char* key, const char* owner) {
  SY_REQUIRE(j.is_object() && j.contains(key), FormatError, kComponent, owner, " is missing the field \"", key,
             "\"; fix the tokenizer.json");
  return j.at(key);
}

std::string string_field(const Json& j, const char* key, const char* owner, const std::string& fallback) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
  SY_REQUIRE(j.at(key).is_string(), FormatError, kComponent, owner, ".", key, " must be a string; fix the tokenizer.json");
  return j.at(key).get<std::string>();
}

bool bool_field(const Json& j, const char* key, const char* owner, bool fallback) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
  SY_REQUIRE(j.at(key).is_boolean(), FormatError, kComponent, owner, ".", key, " must be true or false; fix the tokenizer.json");
  return j.at(key).get<bool>();
}

std::string type_of(const Json& j, const char* owner) {
  SY_REQUIRE(j.is_object(), FormatError, kComponent, owner, " must be a JSON object; fix the tokenizer.json");
  const Json& t = require_field(j, "type", owner);
  SY_REQUIRE(t.is_string(), FormatError, kComponent, owner, ".type must be a string; fix the tokenizer.json");
  return t.get<std::string>();
}

}  // namespace sy::tok
