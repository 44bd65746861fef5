// The BPE model of tokenizer.json: vocab, merges (either "a b" strings or ["a", "b"] pairs), byte_fallback,
// unk_token/fuse_unk, continuing_subword_prefix, end_of_word_suffix, ignore_merges. Merging uses a rank map
// over pairs of token ids and a priority queue over a linked list of symbols per word; a bounded cache keeps
// the result for repeated words. Not here: BPE dropout (ignored: inference is deterministic), training.
#include <array>
#include <mutex>
#include <queue>
#include <unordered_map>

#include "tokenizer_internal.h"

namespace sy::tok {
namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

constexpr size_t kCacheCapacity = 1 << 16;  // words
constexpr size_t kMaxCachedWordBytes = 256;

class Bpe : public Model {
 public:
  explicit Bpe(const Json& j);
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const override;
  const int32_t* find_token(std::string_view token) const override {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? nullptr : &it->second;
  }
  const std::string* find_id(int32_t id) const override {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
    return &id_to_token_[id];
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  Vocab vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::string unk_token_;
  int32_t unk_id_ = -1;
  bool has_unk_ = false, fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xXX>" or -1

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

Bpe::Bpe(const Json& j) {
  const char* owner = "BPE model";
  const Json& vocab = require_field(j, "vocab", owner);
  SY_REQUIRE(vocab.is_object(), FormatError, kComponent, "model.vocab must be an object {token: id}; fix the tokenizer.json");
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    SY_REQUIRE(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 &&
                   it.value().get<int64_t>() < (int64_t{1} << 30),
               FormatError, kComponent, "model.vocab[\"", it.key(), "\"] must be a non-negative integer id");
    int32_t id = it.value().get<int32_t>();
    vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(max_id + 1);
  has_id_.assign(max_id + 1, false);
  for (const auto& [tok, id] : vocab_) {
    id_to_token_[id] = tok;
    has_id_[id] = true;
  }

  unk_token_ = string_field(j, "unk_token", owner, "");
  has_unk_ = j.contains("unk_token") && j.at("unk_token").is_string();
  if (has_unk_) {
    auto it = vocab_.find(unk_token_);
    SY_REQUIRE(it != vocab_.end(), FormatError, kComponent, "model.unk_token \"", unk_token_,
               "\" is not in the vocabulary; fix the tokenizer.json");
    unk_id_ = it->second;
  }
  fuse_unk_ = bool_field(j, "fuse_unk", owner, false);
  byte_fallback_ = bool_field(j, "byte_fallback", owner, false);
  ignore_merges_ = bool_field(j, "ignore_merges", owner, false);
  prefix_ = string_field(j, "continuing_subword_prefix", owner, "");
  suffix_ = string_field(j, "end_of_word_suffix", owner, "");
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
    auto it = vocab_.find(name);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  const Json& merges = require_field(j, "merges", owner);
  SY_REQUIRE(merges.is_array(), FormatError, kComponent, "model.merges must be a list; fix the tokenizer.json");
  merges_.reserve(merges.size() * 2);
  int32_t rank = 0;
  for (const Json& m : merges) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      SY_REQUIRE(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, FormatError, kComponent,
                 "merge #", rank, " \"", s, "\" must be two tokens separated by one space");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      throw make_error<FormatError>(kComponent, "merge #", rank, " must be \"a b\" or [\"a\", \"b\"], got ", m.dump());
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    SY_REQUIRE(ia != vocab_.end(), FormatError, kComponent, "merge #", rank, " refers to \"", a,
               "\", which is not in the vocabulary; the tokenizer.json is inconsistent");
    SY_REQUIRE(ib != vocab_.end(), FormatError, kComponent, "merge #", rank, " refers to \"", b,
               "\", which is not in the vocabulary; the tokenizer.json is inconsistent");
    std::string merged = a;
    if (!prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0) merged += b.substr(prefix_.size());
    else merged += b;
    auto im = vocab_.find(merged);
    SY_REQUIRE(im != vocab_.end(), FormatError, kComponent, "merge #", rank, " produces \"", merged,
               "\", which is not in the vocabulary; the tokenizer.json is inconsistent");
    merges_.emplace(pair_key(ia->second, ib->second), MergeInfo{rank, im->second});
    ++rank;
  }
}

void Bpe::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = piece.size() < kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  merge_word(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

void Bpe::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  // symbols[i]: one current token of the word; prev/next link the live symbols, len 0 marks a merged-away one.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](int32_t id, uint32_t len) {
    int32_t idx = static_cast<int32_t>(symbols.size());
    if (idx > 0) symbols.back().next = idx;
    symbols.push_back({id, idx - 1, -1, len});
  };
  bool have_unk = false;
  uint32_t unk_len = 0;
  std::string buf;
  for (size_t i = 0; i < w.size();) {
    size_t start = i;
    next_code_point(w, i);
    bool is_first = start == 0, is_last = i >= w.size();
    uint32_t byte_len = static_cast<uint32_t>(i - start);
    std::string_view s = w.substr(start, byte_len);
    if ((!is_first && !prefix_.empty()) || (is_last && !suffix_.empty())) {
      buf.clear();
      if (!is_first) buf += prefix_;
      buf += s;
      if (is_last) buf += suffix_;
      s = buf;
    }
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (have_unk) {
        add(unk_id_, unk_len);
        have_unk = false;
      }
      add(it->second, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        for (unsigned char c : s) add(byte_ids_[c], 1);
        continue;
      }
    }
    if (has_unk_) {
      if (have_unk && fuse_unk_) {
        unk_len += byte_len;
      } else {
        if (have_unk) add(unk_id_, unk_len);
        have_unk = true;
        unk_len = byte_len;
      }
    }
  }
  if (have_unk) add(unk_id_, unk_len);

  // Merge queue ordered by (rank, position), lowest first.
  struct Merge {
    int32_t rank, pos, new_id;
    bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Merge> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<Merge> queue(std::less<Merge>(), std::move(heap_storage));
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    auto m = merges_.find(pair_key(symbols[k].id, symbols[k + 1].id));
    if (m != merges_.end()) queue.push({m->second.rank, static_cast<int32_t>(k), m->second.new_id});
  }
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    int32_t next_pos = cur.next;
    Symbol right = symbols[next_pos];
    auto m = merges_.find(pair_key(cur.id, right.id));
    if (m == merges_.end() || m->second.new_id != top.new_id) continue;  // a stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      auto mp = merges_.find(pair_key(symbols[cur.prev].id, cur.id));
      if (mp != merges_.end()) queue.push({mp->second.rank, cur.prev, mp->second.new_id});
    }
    if (cur.next >= 0) {
      auto mn = merges_.find(pair_key(cur.id, symbols[cur.next].id));
      if (mn != merges_.end()) queue.push({mn->second.rank, top.pos, mn->second.new_id});
    }
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace

std::unique_ptr<Model> make_model(const Json& j) {
  std::string type = j.is_object() && !j.contains("type") && j.contains("merges") ? "BPE" : type_of(j, "model");
  if (type == "BPE") return std::make_unique<Bpe>(j);
  throw make_error<Unsupported>(kComponent, "model type \"", type,
                                "\" is not supported (supported: BPE); use a BPE tokenizer.json");
}

}  // namespace sy::tok
