// The --layout string and Megatron Core's legality rules for MoE Parallel Folding layouts.
// Each rule reports what to change; nothing here estimates cost.
#include "switchyard/plan/layout.h"

#include <charconv>
#include <set>
#include <sstream>

#include "switchyard/core/error.h"

namespace sy::plan {

namespace {
constexpr const char* kComponent = "plan";

int parse_int(const std::string& key, const std::string& value) {
  int v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size() || v <= 0) {
    throw make_error<InvalidArgument>(kComponent, "layout: \"", key, "\" needs a positive integer, got \"", value, "\"");
  }
  return v;
}

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "1" || value == "true" || value == "on" || value == "yes") return true;
  if (value == "0" || value == "false" || value == "off" || value == "no") return false;
  throw make_error<InvalidArgument>(kComponent, "layout: \"", key, "\" takes 1/0 (or true/false), got \"", value, "\"");
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}
}  // namespace

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::kNone: return "none";
    case Recompute::kSelective: return "selective";
    case Recompute::kFull: return "full";
  }
  return "?";
}

Layout parse_layout(const std::string& text) {
  Layout l;
  std::set<std::string> seen;
  std::stringstream ss(text);
  std::string item;
  int dp = 0, edp = 0;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      throw make_error<InvalidArgument>(kComponent, "layout: expected key=value, got \"", item,
                                        "\" (example: tp=2,cp=1,pp=8,vpp=4,ep=8,etp=1,mbs=1,recompute=selective)");
    }
    std::string key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    if (!seen.insert(key).second) throw make_error<InvalidArgument>(kComponent, "layout: \"", key, "\" is given twice");
    if (key == "tp") l.tp = parse_int(key, value);
    else if (key == "cp") l.cp = parse_int(key, value);
    else if (key == "pp") l.pp = parse_int(key, value);
    else if (key == "vpp") l.vpp = parse_int(key, value);
    else if (key == "ep") l.ep = parse_int(key, value);
    else if (key == "etp") l.etp = parse_int(key, value);
    else if (key == "mbs") l.mbs = parse_int(key, value);
    else if (key == "dp") dp = parse_int(key, value);
    else if (key == "edp") edp = parse_int(key, value);
    else if (key == "dist_opt" || key == "distributed_optimizer") l.distributed_optimizer = parse_bool(key, value);
    else if (key == "sp") l.sequence_parallel = parse_bool(key, value);
    else if (key == "fold") l.fold = parse_bool(key, value);
    else if (key == "recompute") {
      if (value == "none" || value == "0") l.recompute = Recompute::kNone;
      else if (value == "selective") l.recompute = Recompute::kSelective;
      else if (value == "full") l.recompute = Recompute::kFull;
      else throw make_error<InvalidArgument>(kComponent, "layout: recompute must be none, selective or full, got \"", value, "\"");
    } else if (key == "ecp" || key == "moe_cp" || key == "expert_cp") {
      throw make_error<InvalidArgument>(kComponent, "layout: \"", key, "\": context parallelism applies to attention only; "
                                        "the MoE mapping is ETP x EP x EDP x PP (MoE Parallel Folding). Remove it and "
                                        "use ep/etp for the MoE layers");
    } else if (key == "epp" || key == "moe_pp") {
      throw make_error<InvalidArgument>(kComponent, "layout: \"", key, "\": attention and MoE mappings share one PP size; use pp");
    } else {
      throw make_error<InvalidArgument>(kComponent, "layout: unknown key \"", key,
                                        "\"; known: tp, cp, pp, vpp, ep, etp, mbs, recompute, dist_opt, sp, fold, dp, edp");
    }
  }
  // dp/edp are derived; when given they must agree (checked in check_layout via these fields).
  l.dp = dp;
  l.edp = edp;
  return l;
}

std::string format_layout(const Layout& l) {
  std::ostringstream os;
  os << "tp=" << l.tp << ",cp=" << l.cp << ",pp=" << l.pp << ",vpp=" << l.vpp << ",ep=" << l.ep << ",etp=" << l.etp
     << ",mbs=" << l.mbs << ",recompute=" << recompute_name(l.recompute);
  if (!l.distributed_optimizer) os << ",dist_opt=0";
  if (!l.sequence_parallel) os << ",sp=0";
  if (!l.fold) os << ",fold=0";
  return os.str();
}

std::vector<Violation> check_layout(const PlanModel& model, const TrainJob& job, Layout& l) {
  std::vector<Violation> v;
  auto add = [&](const char* rule, const std::string& msg) { v.push_back({rule, "[plan] " + msg}); };
  auto str = [](auto... args) { return detail::concat(args...); };
  const ModelConfig& c = model.config;
  const int W = job.num_gpus;
  const bool moe = c.moe.num_experts > 0 && c.num_moe_layers() > 0;
  const int given_dp = l.dp, given_edp = l.edp;
  l.dp = l.edp = l.num_microbatches = 0;

  if (W <= 0) add("gpus", "--gpus must be positive");
  if (job.seq_len <= 0 || job.global_batch <= 0) add("job", "--seq and --global-batch must be positive");
  if (W <= 0 || job.seq_len <= 0 || job.global_batch <= 0) return v;

  if (W % (l.tp * l.cp * l.pp) != 0) {
    add("attention_mapping", str("TP x CP x PP = ", l.tp, " x ", l.cp, " x ", l.pp, " = ", l.tp * l.cp * l.pp,
                                 " does not divide ", W, " GPUs; choose sizes whose product divides the world"));
  } else {
    l.dp = W / (l.tp * l.cp * l.pp);
  }
  if (W % (l.etp * l.ep * l.pp) != 0) {
    add("moe_mapping", str("ETP x EP x PP = ", l.etp, " x ", l.ep, " x ", l.pp, " = ", l.etp * l.ep * l.pp,
                           " does not divide ", W, " GPUs (EDP = W / (ETP x EP x PP) must be an integer)"));
  } else {
    l.edp = W / (l.etp * l.ep * l.pp);
  }
  if (given_dp > 0 && l.dp > 0 && given_dp != l.dp) {
    add("dp", str("dp=", given_dp, " disagrees with W / (TP x CP x PP) = ", l.dp, "; drop dp= or fix the sizes"));
  }
  if (given_edp > 0 && l.edp > 0 && given_edp != l.edp) {
    add("edp", str("edp=", given_edp, " disagrees with W / (ETP x EP x PP) = ", l.edp, "; drop edp= or fix the sizes"));
  }
  const AttentionConfig& a = c.attention;
  if (a.num_heads % l.tp != 0) {
    add("tp_heads", str("TP=", l.tp, " does not divide the ", a.num_heads, " attention heads"));
  } else if (!a.mla && a.num_kv_heads % l.tp != 0) {
    add("tp_kv_heads", str("TP=", l.tp, " does not divide the ", a.num_kv_heads, " key/value heads (query groups)"));
  }
  bool has_dense = c.num_moe_layers() < c.num_layers;
  if (has_dense && c.intermediate_size % l.tp != 0) {
    add("tp_ffn", str("TP=", l.tp, " does not divide the MLP width ", c.intermediate_size));
  }
  if (moe) {
    if (c.moe.num_experts % l.ep != 0) {
      add("ep_experts", str("EP=", l.ep, " does not divide the ", c.moe.num_experts, " experts"));
    }
    if (c.moe.expert_intermediate % l.etp != 0) {
      add("etp_ffn", str("ETP=", l.etp, " does not divide the expert width ", c.moe.expert_intermediate));
    }
    if (l.tp > 1 && !l.sequence_parallel) {
      add("sp_moe", "MoE layers with TP>1 need sequence parallelism (Megatron Core); set sp=1");
    }
  } else if (l.ep != 1 || l.etp != 1) {
    add("ep_dense", str(model.name, " is dense: use ep=1 and etp=1"));
  }
  if (!l.fold && moe) {
    if (l.etp != l.tp) add("fold_etp", str("without folding ETP must equal TP (", l.etp, " vs ", l.tp, "); set fold=1 or etp=", l.tp));
    if (l.cp > 1 && l.ep > 1) {
      add("cp_with_ep", "CP and EP in one mapping: without folding the expert group is carved out of DP and cannot be "
                        "combined with CP; set fold=1 (MoE Parallel Folding) or cp=1");
    } else if (l.dp > 0 && l.dp % l.ep != 0) {
      add("fold_ep_dp", str("without folding EP=", l.ep, " must divide DP=", l.dp, "; set fold=1 or a smaller ep"));
    }
  }
  if (l.pp * l.vpp > c.num_layers) {
    add("pp_layers", str("PP x VPP = ", l.pp * l.vpp, " exceeds the ", c.num_layers, " layers"));
  }
  if (l.vpp > 1 && l.pp == 1) add("vpp_needs_pp", "vpp>1 needs pp>1 (virtual stages interleave a pipeline)");
  if (l.cp > 1 && job.seq_len % (2 * l.cp) != 0) {
    add("cp_seq", str("sequence ", job.seq_len, " must divide into 2 x CP = ", 2 * l.cp, " chunks for load-balanced causal CP"));
  }
  if (l.tp > 1 && l.sequence_parallel && (job.seq_len % l.cp != 0 || (job.seq_len / l.cp) % l.tp != 0)) {
    add("sp_seq", str("sequence per CP rank (", job.seq_len, " / ", l.cp, ") must be divisible by TP=", l.tp, " for sequence parallelism"));
  }
  if (l.dp > 0) {
    if (job.global_batch % (l.mbs * l.dp) != 0) {
      add("global_batch", str("global batch ", job.global_batch, " is not a multiple of micro-batch x DP = ", l.mbs, " x ", l.dp,
                              " = ", l.mbs * l.dp, "; change mbs, the layout or the batch"));
    } else {
      l.num_microbatches = job.global_batch / (l.mbs * l.dp);
      if (l.vpp > 1 && l.num_microbatches % l.pp != 0) {
        add("interleave_microbatches", str("the interleaved schedule needs micro-batches per step (", l.num_microbatches,
                                           ") to be a multiple of PP=", l.pp, "; use vpp=1 or change the batch"));
      }
    }
  }
  if (!moe && l.dp > 0) l.edp = l.dp;  // a dense model has no expert mapping; report EDP as DP
  return v;
}

std::vector<std::pair<int, int>> pipeline_blocks(int num_layers, int pp, int vpp) {
  const int blocks = pp * vpp;
  std::vector<std::pair<int, int>> out(blocks);
  const int base = num_layers / blocks, extra = num_layers % blocks;
  // Extra layers go to the middle blocks first: the first and last stages also hold embedding and head.
  std::vector<int> size(blocks, base);
  for (int i = 0; i < extra; ++i) size[(blocks - extra) / 2 + i] += 1;
  int start = 0;
  for (int b = 0; b < blocks; ++b) {
    out[b] = {start, start + size[b]};
    start += size[b];
  }
  return out;
}

}  // namespace sy::plan
