// Expert-parallel MoE block of Model: the router runs replicated on every rank (so routing is identical to a
// single process), each rank dispatches a contiguous share of the tokens to the experts' owners, runs its
// own experts, combines, and the shares are all-gathered. Because the shares are contiguous and in rank
// order, every expert sees exactly the rows a single process would give it, so logits match bit for bit.
// With data-parallel attention each rank instead dispatches all of its own tokens and keeps its outputs.
#include <algorithm>

#include "gpu_forward.h"
#include "switchyard/core/error.h"
#include "switchyard/model/model.h"
#include "switchyard/moe/experts.h"
#include "switchyard/moe/token_dispatcher.h"
#include "switchyard/parallel/comm.h"

namespace sy {

std::pair<int64_t, int64_t> Model::expert_range(int num_experts, int ranks, int rank) {
  SY_REQUIRE(ranks >= 1 && num_experts % ranks == 0, InvalidArgument, "model", num_experts,
             " routed experts cannot be split evenly over ", ranks, " expert-parallel ranks; choose --ep dividing ",
             num_experts);
  const int64_t per = num_experts / ranks;
  return {rank * per, (rank + 1) * per};
}

void Model::set_expert_parallel(std::shared_ptr<parallel::Comm> ep, const moe::DispatcherOptions& options) {
  SY_REQUIRE(ep != nullptr, InvalidArgument, "model", "expert parallelism needs a communicator");
  SY_REQUIRE(config_.moe.num_experts > 0, InvalidArgument, "model", "expert parallelism needs an MoE model");
  auto [first, last] = expert_range(config_.moe.num_experts, ep->size(), ep->rank());
  for (const LayerWeights& lw : weights_.layers) {
    if (!lw.is_moe) continue;
    for (int64_t e = first; e < last; ++e) {
      SY_REQUIRE(lw.moe.experts[e].gate.defined(), InvalidArgument, "model", "rank ", ep->rank(), " owns expert ", e,
                 " but did not load it; load with LoadOptions::load_expert covering [", first, ", ", last, ")");
    }
  }
  ep_ = std::move(ep);
  dispatcher_ = std::make_shared<moe::TokenDispatcher>(*ep_, config_.moe.num_experts, options);
}

void Model::set_attention_data_parallel(bool enabled) {
  SY_REQUIRE(!enabled || dispatcher_, InvalidArgument, "model",
             "data-parallel attention needs expert parallelism; call set_expert_parallel first");
  SY_REQUIRE(!enabled || !tp_, InvalidArgument, "model",
             "data-parallel attention and tensor parallelism cannot share ranks: tensor parallelism splits the "
             "attention of the same tokens over them");
  attention_dp_ = enabled;
  if (gpu_) model_detail::set_attention_data_parallel(*gpu_, enabled);
}

Tensor Model::routed_experts_ep(int layer, const Tensor& h, const moe::Routing& routing) {
  const MoeWeights& w = weights_.layers[layer].moe;
  if (attention_dp_) {  // this rank's tokens only: dispatch them all, keep the combined rows
    moe::DispatchHandle handle = dispatcher_->plan(routing);
    Tensor in = dispatcher_->dispatch(h.contiguous(), handle);
    Tensor y = moe::run_expert_blocks(in, handle.expert_offsets,
                                      w.experts.data() + dispatcher_->first_local_expert(),
                                      moe::activation_for(config_.moe));
    return dispatcher_->combine(y, handle);
  }
  const int ranks = ep_->size(), rank = ep_->rank();
  const int64_t n = h.size(0), hidden = h.size(1), k = routing.top_k;
  // Token share of rank r: [n*r/P, n*(r+1)/P).
  std::vector<int64_t> counts(ranks);
  for (int r = 0; r < ranks; ++r) counts[r] = n * (r + 1) / ranks - n * r / ranks;
  const int64_t begin = n * rank / ranks, end = begin + counts[rank];
  moe::Routing mine;
  mine.num_tokens = end - begin;
  mine.top_k = routing.top_k;
  mine.expert.assign(routing.expert.begin() + begin * k, routing.expert.begin() + end * k);
  mine.weight.assign(routing.weight.begin() + begin * k, routing.weight.begin() + end * k);
  Tensor x = h.slice(0, begin, end).contiguous();  // (share, hidden)
  moe::DispatchHandle handle = dispatcher_->plan(mine);
  Tensor in = dispatcher_->dispatch(x, handle);
  Tensor y = moe::run_expert_blocks(in, handle.expert_offsets, w.experts.data() + dispatcher_->first_local_expert(),
                                    moe::activation_for(config_.moe));
  Tensor part = dispatcher_->combine(y, handle);
  Tensor out = Tensor::empty({n, hidden}, DType::kF32);
  for (int64_t& c : counts) c *= hidden;
  ep_->all_gather_v(part.f32(), part.numel(), out.f32(), counts, DType::kF32);
  return out;
}

}  // namespace sy
