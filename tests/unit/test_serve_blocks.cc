// BlockManager (prefix cache, reference counts, LRU eviction, collision safety) and TextStream (incremental
// text with stop strings) of the serve layer.
#include <gtest/gtest.h>

#include <numeric>

#include "../../src/serve/text_stream.h"
#include "switchyard/core/error.h"
#include "switchyard/serve/block_manager.h"

namespace sy::serve {
namespace {

std::vector<int64_t> iota_tokens(int64_t n, int64_t from = 0) {
  std::vector<int64_t> t(n);
  std::iota(t.begin(), t.end(), from);
  return t;
}

// Allocates blocks for `tokens` after a prefix lookup, and commits every full block.
std::vector<int32_t> admit(BlockManager& bm, const std::vector<int64_t>& tokens, int64_t* hits = nullptr) {
  uint64_t hash = 0;
  std::vector<int32_t> table = bm.match_prefix(tokens, static_cast<int64_t>(tokens.size()) - 1, &hash);
  if (hits) *hits = static_cast<int64_t>(table.size()) * bm.block_size();
  const int64_t matched = static_cast<int64_t>(table.size());
  const int64_t need = (static_cast<int64_t>(tokens.size()) + bm.block_size() - 1) / bm.block_size() - matched;
  EXPECT_TRUE(bm.allocate(table, need));
  for (int64_t b = matched; (b + 1) * bm.block_size() <= static_cast<int64_t>(tokens.size()); ++b) {
    hash = bm.commit(table, b, tokens, hash);
  }
  return table;
}

TEST(BlockManager, SharesFullPrefixBlocksAndKeepsOneTokenToCompute) {
  BlockManager bm(16, 4);
  std::vector<int64_t> a = iota_tokens(10);  // blocks [0-3] [4-7] partial [8,9]
  std::vector<int32_t> ta = admit(bm, a);
  ASSERT_EQ(ta.size(), 3u);
  std::vector<int64_t> b = iota_tokens(9);  // shares both full blocks; a third for the last token
  int64_t hits = 0;
  std::vector<int32_t> tb = admit(bm, b, &hits);
  EXPECT_EQ(hits, 8);
  EXPECT_EQ(tb[0], ta[0]);
  EXPECT_EQ(tb[1], ta[1]);
  EXPECT_NE(tb[2], ta[2]);
  // Exactly 8 tokens: the second block holds the last token, so it must be computed, not shared.
  std::vector<int64_t> c = iota_tokens(8);
  std::vector<int32_t> tc = admit(bm, c, &hits);
  EXPECT_EQ(hits, 4);
  EXPECT_EQ(tc[0], ta[0]);
  EXPECT_NE(tc[1], ta[1]);
  // A different first token shares nothing.
  std::vector<int64_t> d = iota_tokens(10, 1);
  admit(bm, d, &hits);
  EXPECT_EQ(hits, 0);
}

TEST(BlockManager, ReleasedBlocksStayCachedUntilEvictedLeastRecentlyUsedFirst) {
  BlockManager bm(4, 2);
  std::vector<int64_t> a = {1, 2, 3, 4, 5};  // 3 blocks, 2 full
  std::vector<int32_t> ta = admit(bm, a);
  bm.release(ta);
  BlockStats s = bm.stats();
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(s.cached_idle, 2);
  EXPECT_EQ(bm.available(), 4);
  int64_t hits = 0;
  std::vector<int32_t> ta2 = admit(bm, a, &hits);
  EXPECT_EQ(hits, 4);
  bm.release(ta2);
  // Needing all 4 blocks evicts both cached ones; the prefix is gone afterwards.
  std::vector<int32_t> big;
  ASSERT_TRUE(bm.allocate(big, 4));
  EXPECT_EQ(bm.stats().evictions, 2);
  EXPECT_FALSE(bm.allocate(big, 1));
  EXPECT_EQ(big.size(), 4u);
  bm.release(big);
  admit(bm, a, &hits);
  EXPECT_EQ(hits, 0);
}

TEST(BlockManager, ReferenceCountsProtectSharedBlocks) {
  BlockManager bm(3, 2);
  std::vector<int64_t> a = {7, 8, 9};
  std::vector<int32_t> t1 = admit(bm, a);  // [7,8] committed + [9]
  std::vector<int32_t> t2 = admit(bm, a);  // shares [7,8]
  EXPECT_EQ(bm.stats().in_use, 3);
  bm.release(t1);
  EXPECT_EQ(bm.stats().in_use, 2);  // [7,8] still referenced by t2
  std::vector<int32_t> more;
  EXPECT_TRUE(bm.allocate(more, 1));
  EXPECT_FALSE(bm.allocate(more, 1));  // the shared block cannot be evicted while referenced
  bm.release(t2);
  bm.release(more);
  EXPECT_EQ(bm.stats().in_use, 0);
  EXPECT_THROW(bm.release(t2 = {0}), InternalError);  // double release is a bug, reported as such
}

TEST(BlockManager, HashCollisionNeverSharesOtherTokens) {
  // Two different prefixes can only share a block if their tokens match; the hash alone is not trusted.
  BlockManager bm(8, 2);
  std::vector<int64_t> a = {1, 2, 3};
  std::vector<int32_t> ta = admit(bm, a);
  std::vector<int64_t> b = {2, 1, 3};
  int64_t hits = 0;
  admit(bm, b, &hits);
  EXPECT_EQ(hits, 0);
  EXPECT_NE(BlockManager::hash_block(0, std::vector<int64_t>{1, 2}), BlockManager::hash_block(0, std::vector<int64_t>{2, 1}));
}

TEST(BlockManager, RejectsBadSizes) {
  EXPECT_THROW(BlockManager(0, 16), InvalidArgument);
  EXPECT_THROW(BlockManager(4, 0), InvalidArgument);
}

TEST(TextStream, HoldsBackPossibleStopStringsAndCutsBeforeThem) {
  TextStream ts(nullptr, {"5 6"});  // without a tokenizer, ids render as space-separated numbers
  std::string out;
  for (int64_t id : {1, 2, 3, 4}) out += ts.push(id, false);
  EXPECT_EQ(out, "1 2 3");  // the last two bytes (" 4") are held back: they could begin "5 6"
  out += ts.push(5, false);
  out += ts.push(6, false);
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(out, "1 2 3 4 ");
  EXPECT_EQ(ts.push(7, false), "");
  EXPECT_EQ(ts.finish(), "");
}

TEST(TextStream, FinishReleasesHeldTextAndStopIdsAreNotRendered) {
  TextStream ts(nullptr, {"zzz"});
  std::string out = ts.push(1, false);
  out += ts.push(2, false);
  out += ts.push(0, true);
  out += ts.finish();
  EXPECT_EQ(out, "1 2");
  EXPECT_FALSE(ts.stopped());
}

}  // namespace
}  // namespace sy::serve
