// Internal pieces of the tokenizer pipeline (normalizer -> added tokens -> pre-tokenizer -> model ->
// post-processor; decoder on the way back), shared by the src/io/tokenizer_*.cc files. Not a public API.
// Components mirror the Hugging Face `tokenizers` types of the same names and are built from their JSON.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "switchyard/core/error.h"

namespace sy::tok {

using Json = nlohmann::json;
inline constexpr const char* kComponent = "tokenizer";

// ---- Unicode helpers (tokenizer_text.cc) ----
// Length in bytes of the valid UTF-8 prefix of s (== s.size() when all of s is valid).
size_t valid_utf8_prefix(std::string_view s);
// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t c);
// Rust's String::from_utf8_lossy: each maximal ill-formed subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);
bool is_whitespace(char32_t c);    // Unicode White_Space (Rust char::is_whitespace)
bool is_numeric(char32_t c);       // general category Nd, Nl or No (Rust char::is_numeric)
bool is_alphanumeric(char32_t c);  // Alphabetic or numeric (Rust char::is_alphanumeric)
bool is_nonspacing_mark(char32_t c);
// GPT-2 byte-level alphabet: byte -> its printable stand-in code point, and back (-1 if none).
char32_t byte_to_char(uint8_t b);
int char_to_byte(char32_t c);
// Reads a one-character JSON string field (Metaspace replacement).
char32_t single_char(const std::string& s, const char* what);

// ---- Regex (tokenizer_regex.cc): PCRE2 with UTF + UCP + JIT, matching as Oniguruma does in `tokenizers`.
class Regex {
 public:
  // literal = true matches `pattern` as plain text (the "String" form of a Split/Replace pattern).
  Regex(const std::string& pattern, bool literal);
  // Appends [start, end) byte ranges of successive non-overlapping matches in `text` (valid UTF-8).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::shared_ptr<void> code_;  // pcre2_code_8*
};
// Builds a Regex from {"String": s} or {"Regex": r}.
Regex regex_from_pattern_json(const Json& j, const char* owner);
// Replaces every match of re in s with `content`.
std::string regex_replace(const Regex& re, std::string_view s, std::string_view content);

// ---- Normalizers (tokenizer_normalizers.cc) ----
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const Json& j);  // null JSON -> nullptr

// ---- Pre-tokenizers (tokenizer_pretokenizers.cc) ----
struct Piece {
  std::string text;
  bool at_origin = false;  // starts at offset 0 of the original input (Metaspace prepend_scheme "first")
};
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits/rewrites every piece; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j);  // null JSON -> nullptr

// How a split pattern's matches are kept (SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
// Splits `text` given the matched ranges (sorted, non-overlapping); appends non-empty parts to `out`.
void split_by_matches(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches, bool invert,
                      SplitBehavior behavior, bool at_origin, std::vector<Piece>& out);

// ---- Models (tokenizer_bpe.cc) ----
class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized piece.
  virtual void tokenize(std::string_view piece, std::vector<int32_t>& out) const = 0;
  virtual const int32_t* find_token(std::string_view token) const = 0;  // nullptr when absent
  virtual const std::string* find_id(int32_t id) const = 0;              // nullptr when absent
  virtual int32_t vocab_size() const = 0;                                // one past the largest id
};
std::unique_ptr<Model> make_model(const Json& j);

// ---- Decoders (tokenizer_decoders.cc) ----
class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings (may merge them); the final text is their concatenation.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const Json& j);  // null JSON -> nullptr

// ---- Post-processors (tokenizer.cc) ----
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const = 0;
};

// JSON field helpers: typed access with FormatError naming the component.
const Json& require_field(const Json& j, const char* key, const char* owner);
std::string string_field(const Json& j, const char* key, const char* owner, const std::string& fallback);
bool bool_field(const Json& j, const char* key, const char* owner, bool fallback);
std::string type_of(const Json& j, const char* owner);

}  // namespace sy::tok
