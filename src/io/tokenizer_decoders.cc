// Tokenizer decoders: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence, each rewriting the
// list of token strings as the `tokenizers` library does. Not here: WordPiece, BPEDecoder, CTC.
#include "tokenizer_internal.h"

namespace sy::tok {
namespace {

// Maps each byte-level character back to its byte; a token with any other character is kept as its UTF-8.
class ByteLevel : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      for (size_t i = 0; i < t.size();) {
        int b = char_to_byte(next_code_point(t, i));
        if (b < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class Metaspace : public Decoder {
 public:
  explicit Metaspace(const Json& j) {
    replacement_ = single_char(string_field(j, "replacement", "Metaspace decoder", "\xE2\x96\x81"), "Metaspace.replacement");
    std::string scheme = string_field(j, "prepend_scheme", "Metaspace decoder", "always");
    strip_first_ = scheme != "never";
    if (j.contains("add_prefix_space") && j.at("add_prefix_space").is_boolean() && !j.at("add_prefix_space").get<bool>())
      strip_first_ = false;
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string out;
      const std::string& t = tokens[k];
      for (size_t i = 0; i < t.size();) {
        size_t start = i;
        char32_t c = next_code_point(t, i);
        if (c == replacement_) {
          if (!(k == 0 && strip_first_)) out += ' ';
        } else {
          out.append(t, start, i - start);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  char32_t replacement_ = 0x2581;
  bool strip_first_ = true;
};

// "<0xAB>" tokens become bytes; a run of them that is not valid UTF-8 becomes one U+FFFD per byte token.
class ByteFallback : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    size_t num_bytes = 0;
    auto flush = [&] {
      if (num_bytes == 0) return;
      if (valid_utf8_prefix(bytes) == bytes.size()) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < num_bytes; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      num_bytes = 0;
    };
    for (std::string& t : tokens) {
      int b = parse_byte_token(t);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
        ++num_bytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }
  static int parse_byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int hi = hex_value(t[3]), lo = hex_value(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class Fuse : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of the one-character `content` per token.
class Strip : public Decoder {
 public:
  explicit Strip(const Json& j) {
    content_ = single_char(string_field(j, "content", "Strip decoder", " "), "Strip.content");
    start_ = j.value("start", 0);
    stop_ = j.value("stop", 0);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<size_t, char32_t>> chars;  // (byte offset, code point)
      for (size_t i = 0; i < t.size();) {
        size_t start = i;
        chars.emplace_back(start, next_code_point(t, i));
      }
      size_t begin = 0, end = chars.size();
      for (int k = 0; k < start_ && begin < end && chars[begin].second == content_; ++k) ++begin;
      for (int k = 0; k < stop_ && end > begin && chars[end - 1].second == content_; ++k) --end;
      size_t b = begin < chars.size() ? chars[begin].first : t.size();
      size_t e = end < chars.size() ? chars[end].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_ = ' ';
  int start_ = 0, stop_ = 0;
};

class Replace : public Decoder {
 public:
  explicit Replace(const Json& j)
      : re_(regex_from_pattern_json(require_field(j, "pattern", "Replace decoder"), "Replace decoder")),
        content_(string_field(j, "content", "Replace decoder", "")) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) t = regex_replace(re_, t, content_);
  }

 private:
  Regex re_;
  std::string content_;
};

class Sequence : public Decoder {
 public:
  explicit Sequence(const Json& j) {
    const Json& list = require_field(j, "decoders", "Sequence decoder");
    SY_REQUIRE(list.is_array(), FormatError, kComponent, "Sequence decoder.decoders must be a list");
    for (const Json& d : list) {
      auto made = make_decoder(d);
      if (made) parts_.push_back(std::move(made));
    }
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : parts_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Metaspace") return std::make_unique<Metaspace>(j);
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") return std::make_unique<Strip>(j);
  if (type == "Replace") return std::make_unique<Replace>(j);
  if (type == "Sequence") return std::make_unique<Sequence>(j);
  throw make_error<Unsupported>(kComponent, "decoder type \"", type,
                                "\" is not supported (supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, "
                                "Replace, Sequence)");
}

}  // namespace sy::tok
