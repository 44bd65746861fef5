// The tokenizer pipeline: loads tokenizer.json, matches added/special tokens, then normalizer -> pre-tokenizer
// -> model -> post-processor on encode, and decoder on decode; plus the streaming decoder.
// Not here: the components themselves (tokenizer_*.cc), offsets, padding/truncation, pair inputs.
#include "switchyard/io/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "tokenizer_internal.h"

namespace sy {
namespace tok {
namespace {

struct AddedToken {
  std::string content;
  std::string decoded;  // what decode() shows: the normalized content when `normalized` (as tokenizers 0.23 does)
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Leftmost-longest matching of a set of literal patterns (as aho-corasick's LeftmostLongest in `tokenizers`).
class AddedMatcher {
 public:
  void add(std::string pattern, size_t token_index) {
    if (pattern.empty()) return;
    auto first = static_cast<unsigned char>(pattern[0]);
    buckets_[first].emplace_back(std::move(pattern), token_index);
    any_ = true;
  }
  void finish() {
    for (auto& b : buckets_)
      std::stable_sort(b.begin(), b.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }
  bool empty() const { return !any_; }
  // Finds the leftmost match at or after `from`; returns false when none. Sets [begin, end) and the token index.
  bool find(std::string_view s, size_t from, size_t& begin, size_t& end, size_t& token) const {
    for (size_t i = from; i < s.size(); ++i) {
      const auto& bucket = buckets_[static_cast<unsigned char>(s[i])];
      for (const auto& [pat, idx] : bucket) {
        if (s.size() - i >= pat.size() && s.compare(i, pat.size(), pat) == 0) {
          begin = i;
          end = i + pat.size();
          token = idx;
          return true;
        }
      }
    }
    return false;
  }

 private:
  std::vector<std::pair<std::string, size_t>> buckets_[256];
  bool any_ = false;
};

struct Split {
  std::string text;
  int32_t id = -1;  // >= 0 when this split is an added token
  bool at_origin = false;
};

bool last_char_is_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  char32_t c = next_code_point(s, start);
  return is_alphanumeric(c) || c == '_';
}

bool first_char_is_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  char32_t c = next_code_point(s, i);
  return is_alphanumeric(c) || c == '_';
}

}  // namespace

struct TokenizerImpl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t> added_by_content;
  AddedMatcher raw_matcher, normalized_matcher;
  int32_t vocab_size = 0;

  // Splits `s` around added-token matches, applying single_word, lstrip and rstrip (AddedVocabulary::find_matches).
  void split_added(std::string_view s, const AddedMatcher& m, bool at_origin, std::vector<Split>& out) const {
    if (m.empty()) {
      if (!s.empty()) out.push_back({std::string(s), -1, at_origin});
      return;
    }
    size_t start_offset = 0, from = 0, begin = 0, end = 0, idx = 0;
    while (from < s.size() && m.find(s, from, begin, end, idx)) {
      const AddedToken& t = added[idx];
      from = end;
      if (t.single_word) {
        bool start_space = begin == 0 || !last_char_is_word(s.substr(0, begin));
        bool stop_space = end == s.size() || !first_char_is_word(s.substr(end));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t b = begin;
        while (b > 0) {
          size_t p = b - 1;
          while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
          size_t q = p;
          if (!is_whitespace(next_code_point(s, q))) break;
          b = p;
        }
        begin = std::max(b, start_offset);
      }
      if (t.rstrip) {
        while (end < s.size()) {
          size_t q = end;
          if (!is_whitespace(next_code_point(s, q))) break;
          end = q;
        }
        from = end;
      }
      if (start_offset < begin)
        out.push_back({std::string(s.substr(start_offset, begin - start_offset)), -1, at_origin && start_offset == 0});
      out.push_back({std::string(), t.id, false});
      start_offset = end;
    }
    if (start_offset < s.size())
      out.push_back({std::string(s.substr(start_offset)), -1, at_origin && start_offset == 0});
  }

  void encode_piece(std::string text, bool at_origin, std::vector<int32_t>& ids) const {
    std::vector<Piece> pieces;
    pieces.push_back(Piece{std::move(text), at_origin});
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    for (const Piece& p : pieces) model->tokenize(p.text, ids);
  }
};

namespace {

class TemplateProcessing : public PostProcessor {
 public:
  explicit TemplateProcessing(const Json& j) {
    const char* owner = "TemplateProcessing";
    const Json& single = require_field(j, "single", owner);
    const Json& specials = j.contains("special_tokens") ? j.at("special_tokens") : Json::object();
    SY_REQUIRE(single.is_array(), FormatError, kComponent, "TemplateProcessing.single must be a list");
    for (const Json& item : single) {
      if (item.contains("Sequence")) {
        items_.push_back({true, {}});
      } else if (item.contains("SpecialToken")) {
        std::string name = string_field(item.at("SpecialToken"), "id", owner, "");
        SY_REQUIRE(specials.contains(name), FormatError, kComponent, "TemplateProcessing uses special token \"", name,
                   "\" missing from its special_tokens; fix the tokenizer.json");
        const Json& ids = require_field(specials.at(name), "ids", owner);
        SY_REQUIRE(ids.is_array(), FormatError, kComponent, "TemplateProcessing.special_tokens[\"", name, "\"].ids must be a list");
        items_.push_back({false, ids.get<std::vector<int32_t>>()});
      } else {
        throw make_error<FormatError>(kComponent, "TemplateProcessing item ", item.dump(),
                                      " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  }
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& it : items_) {
      if (it.sequence) out.insert(out.end(), ids.begin(), ids.end());
      else if (add_special_tokens) out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    return out;
  }

 private:
  struct Item {
    bool sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Item> items_;
};

// BertProcessing / RobertaProcessing on one sequence: cls, the ids, sep.
class ClsSepProcessing : public PostProcessor {
 public:
  explicit ClsSepProcessing(const Json& j) {
    auto id_of = [&](const char* key) {
      const Json& v = require_field(j, key, "post_processor");
      SY_REQUIRE(v.is_array() && v.size() == 2 && v[1].is_number_integer(), FormatError, kComponent, "post_processor.",
                 key, " must be [token, id]");
      return v[1].get<int32_t>();
    };
    cls_ = id_of("cls");
    sep_ = id_of("sep");
  }
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return ids;
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
    return ids;
  }

 private:
  int32_t cls_ = 0, sep_ = 0;
};

class IdentityProcessing : public PostProcessor {
 public:
  std::vector<int32_t> process(std::vector<int32_t> ids, bool) const override { return ids; }
};

std::unique_ptr<PostProcessor> make_post_processor(const Json& j);

class SequenceProcessing : public PostProcessor {
 public:
  explicit SequenceProcessing(const Json& j) {
    const Json& list = require_field(j, "processors", "Sequence post-processor");
    SY_REQUIRE(list.is_array(), FormatError, kComponent, "Sequence post-processor.processors must be a list");
    for (const Json& p : list) {
      auto made = make_post_processor(p);
      if (made) parts_.push_back(std::move(made));
    }
  }
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const override {
    for (const auto& p : parts_) ids = p->process(std::move(ids), add_special_tokens);
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::unique_ptr<PostProcessor> make_post_processor(const Json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "post_processor");
  if (type == "TemplateProcessing") return std::make_unique<TemplateProcessing>(j);
  if (type == "ByteLevel") return std::make_unique<IdentityProcessing>();  // only adjusts offsets
  if (type == "BertProcessing" || type == "RobertaProcessing") return std::make_unique<ClsSepProcessing>(j);
  if (type == "Sequence") return std::make_unique<SequenceProcessing>(j);
  throw make_error<Unsupported>(kComponent, "post-processor type \"", type,
                                "\" is not supported (supported: TemplateProcessing, ByteLevel, BertProcessing, "
                                "RobertaProcessing, Sequence)");
}

std::shared_ptr<TokenizerImpl> build(const Json& root, const std::string& what) {
  SY_REQUIRE(root.is_object(), FormatError, kComponent, what, " must be a JSON object; is this a tokenizer.json?");
  SY_REQUIRE(root.contains("model"), FormatError, kComponent, what,
             " has no \"model\" field; is this a Hugging Face tokenizer.json?");
  auto impl = std::make_shared<TokenizerImpl>();
  auto null_or = [&](const char* key) -> const Json& {
    static const Json null_json;
    return root.contains(key) ? root.at(key) : null_json;
  };
  impl->normalizer = make_normalizer(null_or("normalizer"));
  impl->pre_tokenizer = make_pre_tokenizer(null_or("pre_tokenizer"));
  impl->model = make_model(root.at("model"));
  impl->post_processor = make_post_processor(null_or("post_processor"));
  impl->decoder = make_decoder(null_or("decoder"));
  impl->vocab_size = impl->model->vocab_size();

  const Json& added = null_or("added_tokens");
  if (!added.is_null()) {
    SY_REQUIRE(added.is_array(), FormatError, kComponent, what, ": added_tokens must be a list");
    for (const Json& a : added) {
      AddedToken t;
      const char* owner = "added_tokens entry";
      t.content = string_field(a, "content", owner, "");
      const Json& id = require_field(a, "id", owner);
      SY_REQUIRE(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (int64_t{1} << 30),
                 FormatError, kComponent, "added token \"", t.content, "\" has an invalid id ", id.dump());
      t.id = id.get<int32_t>();
      t.special = bool_field(a, "special", owner, false);
      t.lstrip = bool_field(a, "lstrip", owner, false);
      t.rstrip = bool_field(a, "rstrip", owner, false);
      t.single_word = bool_field(a, "single_word", owner, false);
      t.normalized = bool_field(a, "normalized", owner, !t.special);
      SY_REQUIRE(!t.content.empty() && valid_utf8_prefix(t.content) == t.content.size(), FormatError, kComponent,
                 "added token with id ", t.id, " has empty or invalid UTF-8 content");
      impl->added_by_id[t.id] = impl->added.size();
      impl->added_by_content[t.content] = t.id;
      impl->vocab_size = std::max(impl->vocab_size, t.id + 1);
      impl->added.push_back(std::move(t));
    }
  }
  for (size_t k = 0; k < impl->added.size(); ++k) {
    AddedToken& t = impl->added[k];
    t.decoded = t.normalized && impl->normalizer ? impl->normalizer->normalize(t.content) : t.content;
    if (t.normalized) impl->normalized_matcher.add(t.decoded, k);
    else impl->raw_matcher.add(t.content, k);
  }
  impl->raw_matcher.finish();
  impl->normalized_matcher.finish();
  return impl;
}

}  // namespace
}  // namespace tok

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& what) {
  tok::Json root;
  try {
    root = tok::Json::parse(json_text.begin(), json_text.end());
  } catch (const tok::Json::exception& e) {
    throw make_error<FormatError>(tok::kComponent, what, " is not valid JSON (", e.what(),
                                  "); re-download or regenerate the tokenizer.json");
  }
  try {
    return Tokenizer(tok::build(root, what));
  } catch (const tok::Json::exception& e) {
    throw make_error<FormatError>(tok::kComponent, what, " has a field of the wrong type (", e.what(),
                                  "); fix the tokenizer.json");
  }
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw make_error<IoError>(tok::kComponent, "cannot open ", path, ": ", std::strerror(errno),
                              "; check the path to tokenizer.json");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  SY_REQUIRE(!in.bad(), IoError, tok::kComponent, "cannot read ", path, "; check the file");
  return from_json(ss.str(), path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const tok::TokenizerImpl& t = *impl_;
  size_t valid = tok::valid_utf8_prefix(text);
  SY_REQUIRE(valid == text.size(), InvalidArgument, tok::kComponent, "input text is not valid UTF-8 (bad byte 0x",
             std::hex, static_cast<int>(static_cast<unsigned char>(text[valid])), std::dec, " at offset ", valid,
             "); convert the text to UTF-8 first");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  std::vector<tok::Split> raw, norm;
  t.split_added(text, t.raw_matcher, true, raw);
  for (tok::Split& s : raw) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    std::string normalized = t.normalizer ? t.normalizer->normalize(std::move(s.text)) : std::move(s.text);
    norm.clear();
    t.split_added(normalized, t.normalized_matcher, s.at_origin, norm);
    for (tok::Split& n : norm) {
      if (n.id >= 0) ids.push_back(n.id);
      else t.encode_piece(std::move(n.text), n.at_origin, ids);
    }
  }
  if (t.post_processor) ids = t.post_processor->process(std::move(ids), add_special_tokens);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const tok::TokenizerImpl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = t.added_by_id.find(id);
    if (it != t.added_by_id.end()) {
      const auto& a = t.added[it->second];
      if (!(skip_special_tokens && a.special)) tokens.push_back(a.decoded);
      continue;
    }
    const std::string* s = t.model->find_id(id);
    SY_REQUIRE(s != nullptr, InvalidArgument, tok::kComponent, "token id ", id, " is not in the vocabulary (size ",
               t.vocab_size, "); pass ids produced by this tokenizer");
    if (skip_special_tokens && t.added_by_content.count(*s) && is_special(t.added_by_content.at(*s))) continue;
    tokens.push_back(*s);
  }
  if (!t.decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) out += ' ';
      out += tokens[k];
    }
    return out;
  }
  t.decoder->decode_chain(tokens);
  std::string out;
  for (const std::string& s : tokens) out += s;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  const int32_t* id = impl_->model->find_token(token);
  if (id) return *id;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].decoded;
  const std::string* s = impl_->model->find_id(id);
  SY_REQUIRE(s != nullptr, InvalidArgument, tok::kComponent, "token id ", id, " is not in the vocabulary (size ",
             impl_->vocab_size, ")");
  return *s;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::step(int32_t id) {
  ids_.push_back(id);
  std::string text = tokenizer_.decode(ids_, skip_special_);
  // Hold back while the text ends in U+FFFD: the last character may still be incomplete.
  bool incomplete = text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
  if (text.size() <= prefix_.size() || incomplete) return {};
  SY_CHECK(text.compare(0, prefix_.size(), prefix_) == 0, "stream decode changed already emitted text");
  std::string fresh = text.substr(prefix_.size());
  size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
  prefix_ = tokenizer_.decode(ids_, skip_special_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

std::string StreamDecoder::flush() {
  std::string text = tokenizer_.decode(ids_, skip_special_);
  std::string rest = text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0
                         ? text.substr(prefix_.size())
                         : std::string();
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return rest;
}

}  // namespace sy
