// Tokenizer normalizers: NFC/NFD/NFKC/NFKD (ICU), Lowercase, Replace, Prepend, Strip, StripAccents and
// Sequence, built from their tokenizer.json form. Not here: BertNormalizer and Precompiled (SentencePiece).
#include <unicode/normalizer2.h>
#include <unicode/bytestream.h>
#include <unicode/uchar.h>

#include "tokenizer_internal.h"

namespace sy::tok {
namespace {

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

class UnicodeNormalizer : public Normalizer {
 public:
  UnicodeNormalizer(const std::string& form) : form_(form) {
    UErrorCode status = U_ZERO_ERROR;
    if (form == "NFC") norm_ = icu::Normalizer2::getNFCInstance(status);
    else if (form == "NFD") norm_ = icu::Normalizer2::getNFDInstance(status);
    else if (form == "NFKC") norm_ = icu::Normalizer2::getNFKCInstance(status);
    else norm_ = icu::Normalizer2::getNFKDInstance(status);
    SY_REQUIRE(U_SUCCESS(status) && norm_ != nullptr, Unsupported, kComponent, "ICU cannot provide ", form,
               " normalization (", u_errorName(status), "); check the ICU data installation");
  }
  std::string normalize(std::string s) const override {
    if (is_ascii(s)) return s;  // every normalization form leaves ASCII unchanged
    std::string out;
    out.reserve(s.size());
    icu::StringByteSink<std::string> sink(&out);
    UErrorCode status = U_ZERO_ERROR;
    norm_->normalizeUTF8(0, icu::StringPiece(s.data(), static_cast<int32_t>(s.size())), sink, nullptr, status);
    SY_REQUIRE(U_SUCCESS(status), InvalidArgument, kComponent, form_, " normalization failed: ", u_errorName(status));
    return out;
  }

 private:
  std::string form_;
  const icu::Normalizer2* norm_ = nullptr;
};

// Per-character full lowercase mapping (Rust char::to_lowercase): simple mappings plus U+0130 -> "i̇".
class Lowercase : public Normalizer {
 public:
  std::string normalize(std::string s) const override {
    if (is_ascii(s)) {
      for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      return s;
    }
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      char32_t c = next_code_point(s, i);
      if (c == 0x130) {
        out += "i\xCC\x87";
      } else {
        append_utf8(out, static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))));
      }
    }
    return out;
  }
};

class Replace : public Normalizer {
 public:
  explicit Replace(const Json& j)
      : re_(regex_from_pattern_json(require_field(j, "pattern", "Replace normalizer"), "Replace normalizer")),
        content_(string_field(j, "content", "Replace normalizer", "")) {}
  std::string normalize(std::string s) const override { return regex_replace(re_, s, content_); }

 private:
  Regex re_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(const Json& j) : prepend_(string_field(j, "prepend", "Prepend normalizer", "")) {}
  std::string normalize(std::string s) const override { return s.empty() ? s : prepend_ + s; }

 private:
  std::string prepend_;
};

class Strip : public Normalizer {
 public:
  explicit Strip(const Json& j)
      : left_(bool_field(j, "strip_left", "Strip normalizer", true)),
        right_(bool_field(j, "strip_right", "Strip normalizer", true)) {}
  std::string normalize(std::string s) const override {
    size_t begin = 0, end = s.size();
    if (left_) {
      while (begin < end) {
        size_t i = begin;
        if (!is_whitespace(next_code_point(s, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_whitespace(next_code_point(s, i))) break;
        end = start;
      }
    }
    return s.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  std::string normalize(std::string s) const override {
    if (is_ascii(s)) return s;
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      size_t start = i;
      char32_t c = next_code_point(s, i);
      if (!is_nonspacing_mark(c)) out.append(s, start, i - start);
    }
    return out;
  }
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(const Json& j) {
    const Json& list = require_field(j, "normalizers", "Sequence normalizer");
    SY_REQUIRE(list.is_array(), FormatError, kComponent, "Sequence normalizer.normalizers must be a list");
    for (const Json& n : list) {
      auto made = make_normalizer(n);
      if (made) parts_.push_back(std::move(made));
    }
  }
  std::string normalize(std::string s) const override {
    for (const auto& n : parts_) s = n->normalize(std::move(s));
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "normalizer");
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") return std::make_unique<UnicodeNormalizer>(type);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Replace") return std::make_unique<Replace>(j);
  if (type == "Prepend") return std::make_unique<Prepend>(j);
  if (type == "Strip") return std::make_unique<Strip>(j);
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Sequence") return std::make_unique<Sequence>(j);
  throw make_error<Unsupported>(kComponent, "normalizer type \"", type,
                                "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, "
                                "Strip, StripAccents, Sequence)");
}

}  // namespace sy::tok
