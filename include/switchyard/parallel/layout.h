// ParallelLayout: the process groups of one world mapped twice, as MoE Parallel Folding does (Megatron Core):
//   attention/dense layers: TP x CP x DP x PP   (DP = W / (TP * CP * PP))
//   MoE layers:             ETP x EP x EDP x PP (EDP = W / (ETP * EP * PP))
// Ranks are laid out by an order string such as "tp-cp-ep-dp-pp", leftmost fastest; both mappings use the
// same order (EP has size 1 in the attention mapping and CP in the MoE mapping). Group generation is
// Megatron Core's RankGenerator / generate_masked_orthogonal_rank_groups, so the groups are identical.
// It only computes rank lists: creating communicators from them is Comm::split_groups.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace sy::parallel {

using RankGroups = std::vector<std::vector<int>>;  // [g][i] = world rank of member i of group g

struct ParallelSizes {
  int world = 1;
  int tp = 1, cp = 1, pp = 1;
  int etp = 0;  // expert tensor parallel; 0 = same as tp (Megatron's default)
  int ep = 1;
  std::string order = "tp-cp-ep-dp-pp";
};

class ParallelLayout {
 public:
  // Validates the sizes and the order; throws InvalidArgument naming the violated rule.
  explicit ParallelLayout(const ParallelSizes& sizes);

  const ParallelSizes& sizes() const { return sizes_; }
  int dp() const { return dp_; }
  int edp() const { return edp_; }
  int etp() const { return sizes_.etp; }

  // Groups of the attention mapping for a hyphenated subset of {tp, cp, dp, pp}, e.g. "tp", "dp-cp", "tp-cp".
  RankGroups attention_groups(const std::string& token) const;
  // Groups of the MoE mapping for a subset of {tp, ep, dp, pp} where tp means ETP and dp means EDP.
  RankGroups expert_groups(const std::string& token) const;
  // Every named group: tp, cp, dp, pp, tp_cp, dp_cp, tp_dp_cp, tp_pp (attention); ep, etp, edp, etp_ep,
  // etp_ep_pp (MoE).
  std::map<std::string, RankGroups> all_groups() const;
  // The group of `name` (a key of all_groups) that holds `rank`.
  std::vector<int> group_of(const std::string& name, int rank) const;

 private:
  ParallelSizes sizes_;
  int dp_ = 1, edp_ = 1;
};

// Megatron Core's generate_masked_orthogonal_rank_groups: ranks are sum_i idx_i * stride_i with strides the
// prefix products of `parallel_size`; each group varies the masked dimensions and fixes the others.
RankGroups masked_orthogonal_rank_groups(int world, const std::vector<int>& parallel_size, const std::vector<bool>& mask);

}  // namespace sy::parallel
