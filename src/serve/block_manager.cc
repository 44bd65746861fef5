// BlockManager: reference-counted KV blocks with a content-hash prefix cache and LRU eviction.
#include "switchyard/serve/block_manager.h"

#include <algorithm>

#include "switchyard/core/error.h"

namespace sy::serve {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size) : block_size_(block_size) {
  SY_REQUIRE(num_blocks > 0 && num_blocks < (int64_t{1} << 31) && block_size > 0, InvalidArgument, "serve",
             "the KV cache needs at least one block of at least one token (got ", num_blocks, " blocks of ",
             block_size, ")");
  blocks_.resize(num_blocks);
  free_.reserve(num_blocks);
  for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

uint64_t BlockManager::hash_block(uint64_t parent, std::span<const int64_t> tokens) {
  // splitmix64-style mixing of the parent hash and each token.
  uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
  for (int64_t t : tokens) {
    h ^= static_cast<uint64_t>(t) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
  }
  return h == 0 ? 1 : h;  // 0 means "no parent"
}

void BlockManager::take(int32_t id) {
  Block& b = blocks_[id];
  if (b.refs == 0 && b.hashed) lru_.erase(b.lru_pos);
  ++b.refs;
}

void BlockManager::record_lookup(int64_t queried_tokens, int64_t hit_tokens) {
  queried_ += queried_tokens;
  hits_ += hit_tokens;
}

std::vector<int32_t> BlockManager::match_prefix(std::span<const int64_t> tokens, int64_t max_tokens,
                                                uint64_t* hash_out) {
  std::vector<int32_t> found;
  const int64_t limit = std::min<int64_t>(max_tokens, static_cast<int64_t>(tokens.size()));
  uint64_t parent = 0;
  for (int64_t start = 0; start + block_size_ <= limit; start += block_size_) {
    std::span<const int64_t> chunk = tokens.subspan(start, block_size_);
    const uint64_t h = hash_block(parent, chunk);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const Block& b = blocks_[it->second];
    if (b.parent != parent || !std::equal(chunk.begin(), chunk.end(), b.tokens.begin(), b.tokens.end())) break;
    take(it->second);
    found.push_back(it->second);
    parent = h;
  }
  if (hash_out) *hash_out = parent;
  return found;
}

bool BlockManager::allocate(std::vector<int32_t>& table, int64_t n) {
  if (n <= 0) return true;
  if (available() < n) return false;
  for (int64_t i = 0; i < n; ++i) {
    int32_t id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {  // evict the least recently used idle cached block
      id = lru_.front();
      lru_.pop_front();
      Block& b = blocks_[id];
      by_hash_.erase(b.hash);
      b.hashed = false;
      b.tokens.clear();
      ++evictions_;
    }
    blocks_[id].refs = 1;
    table.push_back(id);
  }
  return true;
}

uint64_t BlockManager::commit(const std::vector<int32_t>& table, int64_t index, std::span<const int64_t> tokens,
                              uint64_t parent) {
  SY_CHECK(index >= 0 && index < static_cast<int64_t>(table.size()) &&
               static_cast<int64_t>(tokens.size()) >= (index + 1) * block_size_,
           "BlockManager::commit: block ", index, " is not full");
  std::span<const int64_t> chunk = tokens.subspan(index * block_size_, block_size_);
  const uint64_t h = hash_block(parent, chunk);
  Block& b = blocks_[table[index]];
  if (!b.hashed && by_hash_.find(h) == by_hash_.end()) {
    b.hashed = true;
    b.hash = h;
    b.parent = parent;
    b.tokens.assign(chunk.begin(), chunk.end());
    by_hash_[h] = table[index];
  }
  return h;
}

void BlockManager::release(std::vector<int32_t>& table) {
  // Release in reverse so a sequence's tail blocks become the first eviction candidates.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& b = blocks_[*it];
    SY_CHECK(b.refs > 0, "BlockManager::release: block ", *it, " is not referenced");
    if (--b.refs > 0) continue;
    if (b.hashed) {
      b.lru_pos = lru_.insert(lru_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
  table.clear();
}

BlockStats BlockManager::stats() const {
  BlockStats s;
  s.total = static_cast<int64_t>(blocks_.size());
  s.cached_idle = static_cast<int64_t>(lru_.size());
  s.in_use = s.total - s.cached_idle - static_cast<int64_t>(free_.size());
  s.prefix_queried_tokens = queried_;
  s.prefix_hit_tokens = hits_;
  s.evictions = evictions_;
  return s;
}

}  // namespace sy::serve
