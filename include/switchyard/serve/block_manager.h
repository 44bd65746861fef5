// BlockManager: which KV blocks of the PagedKvPool belong to which sequence, with prefix caching.
// A full block is identified by the hash of its token prefix (the parent block's hash and its own tokens), so
// requests sharing a prefix share its blocks. Blocks are reference counted; a cached block nobody uses stays
// in an LRU list and is evicted only when a fresh block is needed. Hash matches are confirmed by comparing
// tokens, so a hash collision can never hand a sequence another prompt's keys. Not thread-safe: the engine
// loop owns it. Block content identity (hash + tokens) is what a later cache tier can move between processes.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace sy::serve {

struct BlockStats {
  int64_t total = 0;
  int64_t in_use = 0;        // referenced by at least one sequence
  int64_t cached_idle = 0;   // hashed, unreferenced, evictable
  int64_t prefix_queried_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  int64_t evictions = 0;
};

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);
  int64_t block_size() const { return block_size_; }
  // Blocks that allocate() can hand out now (free or evictable).
  int64_t available() const { return static_cast<int64_t>(free_.size() + lru_.size()); }

  // Longest run of cached full blocks holding tokens[0, k*block_size), k*block_size <= max_tokens. Takes a
  // reference on each; the caller appends them to its table. `hash_out` gets the last matched block's hash
  // (0 when none). Call record_lookup once the lookup is final (an admission that failed is retried later).
  std::vector<int32_t> match_prefix(std::span<const int64_t> tokens, int64_t max_tokens, uint64_t* hash_out = nullptr);
  void record_lookup(int64_t queried_tokens, int64_t hit_tokens);
  // Appends `n` fresh blocks to `table` (evicting idle cached blocks, oldest first). Returns false and
  // changes nothing when fewer than n are available.
  bool allocate(std::vector<int32_t>& table, int64_t n);
  // Registers table[index] (now holding tokens[index*bs, (index+1)*bs) of `tokens`, all computed) as the
  // cached copy of that prefix, unless one is registered already. `parent` is the hash of block index-1
  // (0 for the first); returns this block's hash for the next call.
  uint64_t commit(const std::vector<int32_t>& table, int64_t index, std::span<const int64_t> tokens,
                  uint64_t parent);
  // Drops the sequence's references; blocks reaching zero become free (unhashed) or idle cached (hashed).
  void release(std::vector<int32_t>& table);

  BlockStats stats() const;
  static uint64_t hash_block(uint64_t parent, std::span<const int64_t> tokens);

 private:
  struct Block {
    int32_t refs = 0;
    bool hashed = false;
    uint64_t hash = 0;
    std::vector<int64_t> tokens;  // the block's tokens when hashed (collision check)
    uint64_t parent = 0;
    std::list<int32_t>::iterator lru_pos;
  };
  void take(int32_t id);  // reference a block (removing it from the idle list)

  int64_t block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // idle cached blocks, least recently used first
  std::unordered_map<uint64_t, int32_t> by_hash_;
  int64_t queried_ = 0, hits_ = 0, evictions_ = 0;
};

}  // namespace sy::serve
