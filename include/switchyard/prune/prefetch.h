// Read only what a model uses: asks the kernel (madvise MADV_WILLNEED) to read exactly the file ranges of the
// weights a model holds as views of a checkpoint's memory map. Page faults then find those pages cached, so the
// kernel's mmap read-around (as large as the device read-ahead, often MBs) never pulls in the bytes of dropped
// experts that sit next to kept ones. Advice only: nothing fails if the kernel ignores it.
#pragma once

#include <cstdint>

#include "switchyard/model/weights.h"

namespace sy::prune {

struct PrefetchOptions {
  bool routed_experts = true;  // false: every tensor except the routed experts (for a probe pass)
};

// Returns the bytes advised (page-rounded). Owned (copied) tensors are skipped.
int64_t prefetch_weights(const ModelWeights& weights, const PrefetchOptions& options = {});

}  // namespace sy::prune
