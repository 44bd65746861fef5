// ParallelLayout: validation of the parallel sizes and Megatron Core's rank-group generation; see layout.h.
#include "switchyard/parallel/layout.h"

#include <algorithm>
#include <set>
#include <sstream>

#include "switchyard/core/error.h"

namespace sy::parallel {

namespace {

std::vector<std::string> split_tokens(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, '-')) out.push_back(t);
  return out;
}

std::vector<int64_t> prefix_product(const std::vector<int>& a) {
  std::vector<int64_t> r{1};
  for (int v : a) r.push_back(r.back() * v);
  return r;
}

// One RankGenerator of Megatron Core: sizes by name, the order completed with missing size-1 names.
struct Generator {
  std::vector<std::string> names;  // order, leftmost fastest
  std::vector<int> sizes;
  int world = 1;

  Generator(const std::map<std::string, int>& by_name, const std::string& order) {
    names = split_tokens(order);
    for (const auto& [name, size] : by_name) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    for (const std::string& n : names) sizes.push_back(by_name.at(n));
    for (int s : sizes) world *= s;
  }
  RankGroups groups(const std::string& token) const {
    std::vector<bool> mask(names.size(), false);
    for (const std::string& t : split_tokens(token)) {
      auto it = std::find(names.begin(), names.end(), t);
      SY_CHECK(it != names.end(), "layout token ", t);
      mask[it - names.begin()] = true;
    }
    return masked_orthogonal_rank_groups(world, sizes, mask);
  }
};

std::map<std::string, int> attention_sizes(const ParallelSizes& s, int dp) {
  return {{"tp", s.tp}, {"cp", s.cp}, {"dp", dp}, {"pp", s.pp}, {"ep", 1}};
}
std::map<std::string, int> expert_sizes(const ParallelSizes& s, int edp) {
  return {{"tp", s.etp}, {"cp", 1}, {"dp", edp}, {"pp", s.pp}, {"ep", s.ep}};
}

}  // namespace

RankGroups masked_orthogonal_rank_groups(int world, const std::vector<int>& parallel_size, const std::vector<bool>& mask) {
  std::vector<int> masked_shape, unmasked_shape;
  std::vector<int64_t> masked_stride, unmasked_stride;
  const std::vector<int64_t> global_stride = prefix_product(parallel_size);
  for (size_t i = 0; i < parallel_size.size(); ++i) {
    (mask[i] ? masked_shape : unmasked_shape).push_back(parallel_size[i]);
    (mask[i] ? masked_stride : unmasked_stride).push_back(global_stride[i]);
  }
  const int64_t group_size = prefix_product(masked_shape).back();
  const int64_t num_groups = world / group_size;
  // idx[i] = (index / prefix[i]) % shape[i]: the mixed-radix digits of index.
  auto decompose = [](int64_t index, const std::vector<int>& shape) {
    std::vector<int64_t> idx(shape.size());
    int64_t stride = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
      idx[i] = (index / stride) % shape[i];
      stride *= shape[i];
    }
    return idx;
  };
  RankGroups out;
  for (int64_t g = 0; g < num_groups; ++g) {
    const std::vector<int64_t> gi = decompose(g, unmasked_shape);
    int64_t base = 0;
    for (size_t i = 0; i < gi.size(); ++i) base += gi[i] * unmasked_stride[i];
    std::vector<int> ranks;
    for (int64_t r = 0; r < group_size; ++r) {
      const std::vector<int64_t> ri = decompose(r, masked_shape);
      int64_t rank = base;
      for (size_t i = 0; i < ri.size(); ++i) rank += ri[i] * masked_stride[i];
      ranks.push_back(static_cast<int>(rank));
    }
    out.push_back(std::move(ranks));
  }
  return out;
}

ParallelLayout::ParallelLayout(const ParallelSizes& sizes) : sizes_(sizes) {
  ParallelSizes& s = sizes_;
  if (s.etp == 0) s.etp = s.tp;
  for (auto [name, v] : {std::pair{"world", s.world}, {"tp", s.tp}, {"cp", s.cp}, {"pp", s.pp}, {"etp", s.etp},
                         {"ep", s.ep}}) {
    SY_REQUIRE(v >= 1, InvalidArgument, "layout", name, " must be >= 1 (got ", v, ")");
  }
  std::transform(s.order.begin(), s.order.end(), s.order.begin(), [](unsigned char c) { return std::tolower(c); });
  std::set<std::string> seen;
  for (const std::string& t : split_tokens(s.order)) {
    SY_REQUIRE(t == "tp" || t == "cp" || t == "ep" || t == "dp" || t == "pp", InvalidArgument, "layout",
               "order \"", s.order, "\" has unknown name \"", t, "\"; use tp, cp, ep, dp and pp joined by '-'");
    SY_REQUIRE(seen.insert(t).second, InvalidArgument, "layout", "order \"", s.order, "\" names ", t, " twice");
  }
  const int64_t model = int64_t{s.tp} * s.cp * s.pp;
  SY_REQUIRE(s.world % model == 0, InvalidArgument, "layout", "rule W % (TP*CP*PP) == 0 violated: world ", s.world,
             " is not divisible by TP*CP*PP = ", model);
  dp_ = static_cast<int>(s.world / model);
  const int64_t expert_model = int64_t{s.etp} * s.ep * s.pp;
  SY_REQUIRE(s.world % expert_model == 0, InvalidArgument, "layout", "rule W % (ETP*EP*PP) == 0 violated: world ",
             s.world, " is not divisible by ETP*EP*PP = ", expert_model);
  edp_ = static_cast<int>(s.world / expert_model);
  auto require_named = [&](const char* name, int size) {
    SY_REQUIRE(size == 1 || seen.count(name), InvalidArgument, "layout", "rule: every size > 1 is named in the order; ",
               name, " = ", size, " is missing from \"", s.order, "\"");
  };
  require_named("tp", std::max(s.tp, s.etp));
  require_named("cp", s.cp);
  require_named("dp", std::max(dp_, edp_));
  require_named("pp", s.pp);
  require_named("ep", s.ep);
  const bool pp_last = s.order.size() >= 2 && s.order.compare(s.order.size() - 2, 2, "pp") == 0;
  SY_REQUIRE(pp_last || s.pp == 1 || edp_ == dp_, InvalidArgument, "layout",
             "rule: unless the order ends with pp (or PP = 1), EDP must equal DP; got DP = ", dp_, ", EDP = ", edp_);
  SY_REQUIRE(attention_groups("pp") == expert_groups("pp"), InvalidArgument, "layout",
             "rule: PP groups must be the same in the attention and MoE mappings; choose an order with pp last");
}

RankGroups ParallelLayout::attention_groups(const std::string& token) const {
  for (const std::string& t : split_tokens(token)) {
    SY_REQUIRE(t == "tp" || t == "cp" || t == "dp" || t == "pp", InvalidArgument, "layout",
               "attention groups are made of tp, cp, dp and pp, not \"", t, "\"");
  }
  return Generator(attention_sizes(sizes_, dp_), sizes_.order).groups(token);
}

RankGroups ParallelLayout::expert_groups(const std::string& token) const {
  for (const std::string& t : split_tokens(token)) {
    SY_REQUIRE(t == "tp" || t == "ep" || t == "dp" || t == "pp", InvalidArgument, "layout",
               "MoE groups are made of tp (ETP), ep, dp (EDP) and pp, not \"", t, "\"");
  }
  return Generator(expert_sizes(sizes_, edp_), sizes_.order).groups(token);
}

std::map<std::string, RankGroups> ParallelLayout::all_groups() const {
  return {
      {"tp", attention_groups("tp")},           {"cp", attention_groups("cp")},
      {"dp", attention_groups("dp")},           {"pp", attention_groups("pp")},
      {"tp_cp", attention_groups("tp-cp")},     {"dp_cp", attention_groups("dp-cp")},
      {"tp_dp_cp", attention_groups("tp-dp-cp")}, {"tp_pp", attention_groups("tp-pp")},
      {"ep", expert_groups("ep")},              {"etp", expert_groups("tp")},
      {"edp", expert_groups("dp")},             {"etp_ep", expert_groups("tp-ep")},
      {"etp_ep_pp", expert_groups("tp-ep-pp")},
  };
}

std::vector<int> ParallelLayout::group_of(const std::string& name, int rank) const {
  auto all = all_groups();
  auto it = all.find(name);
  SY_REQUIRE(it != all.end(), InvalidArgument, "layout", "no group named \"", name, "\"");
  for (const auto& g : it->second) {
    if (std::find(g.begin(), g.end(), rank) != g.end()) return g;
  }
  throw make_error<InvalidArgument>("layout", "rank ", rank, " is outside the world of ", sizes_.world);
}

}  // namespace sy::parallel
