// Tokenizer pre-tokenizers: ByteLevel, Split (regex or literal, five delimiter behaviours, invert), Digits,
// Metaspace, Whitespace, WhitespaceSplit, Punctuation and Sequence, as the `tokenizers` library splits text.
// Not here: BertPreTokenizer, CharDelimiterSplit, UnicodeScripts.
#include <algorithm>
#include <array>

#include "tokenizer_internal.h"

namespace sy::tok {

void split_by_matches(std::string_view text, const std::vector<std::pair<size_t, size_t>>& matches, bool invert,
                      SplitBehavior behavior, bool at_origin, std::vector<Piece>& out) {
  // (begin, end, is_match) covering the whole text, as Pattern::find_matches builds it.
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  if (text.empty()) {
    spans.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (auto [s, e] : matches) {
      if (prev != s) spans.push_back({prev, s, false});
      spans.push_back({s, e, true});
      prev = e;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
  }
  if (invert)
    for (auto& sp : spans) sp.match = !sp.match;

  struct Keep {
    size_t b, e;
    bool remove;
  };
  std::vector<Keep> keep;
  keep.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& sp : spans) keep.push_back({sp.b, sp.e, false});
      break;
    case SplitBehavior::kRemoved:
      for (auto& sp : spans) keep.push_back({sp.b, sp.e, sp.match});
      break;
    case SplitBehavior::kContiguous: {
      bool prev = false;
      for (auto& sp : spans) {
        if (sp.match == prev && !keep.empty()) keep.back().e = sp.e;
        else keep.push_back({sp.b, sp.e, false});
        prev = sp.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev = false;
      for (auto& sp : spans) {
        if (sp.match && !prev && !keep.empty()) keep.back().e = sp.e;
        else keep.push_back({sp.b, sp.e, false});
        prev = sp.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& sp = spans[k];
        if (sp.match && !prev && !keep.empty()) keep.back().b = sp.b;
        else keep.push_back({sp.b, sp.e, false});
        prev = sp.match;
      }
      std::reverse(keep.begin(), keep.end());
      break;
    }
  }
  for (const Keep& k : keep) {
    if (k.remove || k.e == k.b) continue;
    out.push_back(Piece{std::string(text.substr(k.b, k.e - k.b)), at_origin && k.b == 0});
  }
}

namespace {

// Every character satisfying pred is its own match (the Fn(char) -> bool pattern of `tokenizers`).
template <typename Pred>
void char_matches(std::string_view text, Pred pred, std::vector<std::pair<size_t, size_t>>& out) {
  for (size_t i = 0; i < text.size();) {
    size_t start = i;
    char32_t c = next_code_point(text, i);
    if (pred(c)) out.emplace_back(start, i);
  }
}

// Applies a splitting function to every piece, in place.
template <typename Fn>
void split_each(std::vector<Piece>& pieces, Fn split_one) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  std::vector<std::pair<size_t, size_t>> matches;
  for (Piece& p : pieces) {
    matches.clear();
    split_one(p, matches, out);
  }
  pieces.swap(out);
}

SplitBehavior parse_behavior(const std::string& s) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  throw make_error<FormatError>(kComponent, "unknown split behavior \"", s,
                                "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel : public PreTokenizer {
 public:
  explicit ByteLevel(const Json& j)
      : add_prefix_space_(bool_field(j, "add_prefix_space", "ByteLevel pre-tokenizer", true)),
        use_regex_(bool_field(j, "use_regex", "ByteLevel pre-tokenizer", true)),
        re_(kGpt2Pattern, false) {
    for (int b = 0; b < 256; ++b) append_utf8(byte_chars_[b], byte_to_char(static_cast<uint8_t>(b)));
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, 1, ' ');
      size_t first = out.size();
      if (use_regex_) {
        re_.find_all(p.text, matches);
        split_by_matches(p.text, matches, false, SplitBehavior::kIsolated, p.at_origin, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
      for (size_t k = first; k < out.size(); ++k) out[k].text = map_bytes(out[k].text);
    });
  }

 private:
  std::string map_bytes(std::string_view s) const {
    std::string r;
    r.reserve(s.size() * 2);
    for (unsigned char c : s) r += byte_chars_[c];
    return r;
  }
  bool add_prefix_space_, use_regex_;
  Regex re_;
  std::array<std::string, 256> byte_chars_;
};

class Split : public PreTokenizer {
 public:
  explicit Split(const Json& j)
      : re_(regex_from_pattern_json(require_field(j, "pattern", "Split pre-tokenizer"), "Split pre-tokenizer")),
        behavior_(parse_behavior(string_field(j, "behavior", "Split pre-tokenizer", "Isolated"))),
        invert_(bool_field(j, "invert", "Split pre-tokenizer", false)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      re_.find_all(p.text, matches);
      split_by_matches(p.text, matches, invert_, behavior_, p.at_origin, out);
    });
  }

 private:
  Regex re_;
  SplitBehavior behavior_;
  bool invert_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(const Json& j) : individual_(bool_field(j, "individual_digits", "Digits pre-tokenizer", false)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      char_matches(p.text, is_numeric, matches);
      split_by_matches(p.text, matches, false, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                       p.at_origin, out);
    });
  }

 private:
  bool individual_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  explicit Metaspace(const Json& j) {
    const char* owner = "Metaspace pre-tokenizer";
    replacement_ = string_field(j, "replacement", owner, "\xE2\x96\x81");
    replacement_char_ = single_char(replacement_, "Metaspace.replacement");
    std::string scheme = string_field(j, "prepend_scheme", owner, "always");
    if (scheme == "always") prepend_ = Prepend::kAlways;
    else if (scheme == "first") prepend_ = Prepend::kFirst;
    else if (scheme == "never") prepend_ = Prepend::kNever;
    else
      throw make_error<FormatError>(kComponent, "Metaspace.prepend_scheme \"", scheme,
                                    "\" is unknown (expected always, first or never)");
    if (j.contains("add_prefix_space") && j.at("add_prefix_space").is_boolean() && !j.at("add_prefix_space").get<bool>()) {
      SY_REQUIRE(prepend_ == Prepend::kNever || !j.contains("prepend_scheme"), FormatError, kComponent,
                 "Metaspace add_prefix_space=false contradicts prepend_scheme; fix the tokenizer.json");
      prepend_ = Prepend::kNever;
    }
    split_ = bool_field(j, "split", owner, true);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      std::string t;
      t.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') t += replacement_;
        else t += c;
      }
      bool starts = t.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && p.at_origin)))
        t.insert(0, replacement_);
      if (!split_) {
        if (!t.empty()) out.push_back(Piece{std::move(t), p.at_origin});
        return;
      }
      char_matches(t, [&](char32_t c) { return c == replacement_char_; }, matches);
      split_by_matches(t, matches, false, SplitBehavior::kMergedWithNext, p.at_origin, out);
    });
  }

 private:
  std::string replacement_;
  char32_t replacement_char_ = 0x2581;
  Prepend prepend_ = Prepend::kAlways;
  bool split_ = true;
};

// Whitespace: keeps runs of \w and runs of other non-space characters. WhitespaceSplit: splits on spaces.
class Whitespace : public PreTokenizer {
 public:
  Whitespace() : re_(R"(\w+|[^\w\s]+)", false) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      re_.find_all(p.text, matches);
      split_by_matches(p.text, matches, true, SplitBehavior::kRemoved, p.at_origin, out);
    });
  }

 private:
  Regex re_;
};

class WhitespaceSplit : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& p, auto& matches, std::vector<Piece>& out) {
      char_matches(p.text, is_whitespace, matches);
      split_by_matches(p.text, matches, false, SplitBehavior::kRemoved, p.at_origin, out);
    });
  }
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(const Json& j) {
    const Json& list = require_field(j, "pretokenizers", "Sequence pre-tokenizer");
    SY_REQUIRE(list.is_array(), FormatError, kComponent, "Sequence pre-tokenizer.pretokenizers must be a list");
    for (const Json& p : list) {
      auto made = make_pre_tokenizer(p);
      if (made) parts_.push_back(std::move(made));
    }
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "pre_tokenizer");
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(j);
  if (type == "Split") return std::make_unique<Split>(j);
  if (type == "Digits") return std::make_unique<Digits>(j);
  if (type == "Metaspace") return std::make_unique<Metaspace>(j);
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Sequence") return std::make_unique<Sequence>(j);
  throw make_error<Unsupported>(kComponent, "pre-tokenizer type \"", type,
                                "\" is not supported (supported: ByteLevel, Split, Digits, Metaspace, Whitespace, "
                                "WhitespaceSplit, Sequence)");
}

}  // namespace sy::tok
