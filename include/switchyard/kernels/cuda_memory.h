// CUDA device memory: a caching allocator over cudaMalloc'd blocks, the engine's default stream, and
// host <-> device tensor copies. Compiled only in CUDA builds (SY_HAS_CUDA); include it only under that macro.
// Deliberately not here: managed memory (never used), multiple streams or devices per process (one device,
// device 0, and one stream for now), memory pools shared with other libraries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "switchyard/core/tensor.h"

typedef struct CUstream_st* cudaStream_t;  // same declaration as cuda_runtime_api.h

namespace sy::cuda {

// The stream every switchyard CUDA op is issued on (created on first use, non-blocking).
cudaStream_t stream();
// Waits until all work on stream() has finished; throws sy::Error naming the CUDA error if a kernel failed.
void synchronize();

// Counters of the caching allocator.
struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out to live storages
  size_t bytes_cached = 0;     // in free lists, ready for reuse
  int64_t num_cuda_mallocs = 0;  // cudaMalloc calls so far
  int64_t num_reuses = 0;        // allocations served from a free list
};
AllocatorStats allocator_stats();
// Returns every cached (free) block to the driver with cudaFree.
void empty_cache();

// Size class an allocation of `bytes` is served from (bucket granularity: 512 B below 1 MiB, 256 KiB above).
size_t bucket_size(size_t bytes);

// Device storage of at least `bytes`; its destructor returns the block to the cache (never to the driver).
std::shared_ptr<Storage> allocate_storage(size_t bytes);

// Zeroes `bytes` at device pointer `ptr` (asynchronous, on stream()).
void zero(void* ptr, size_t bytes);

// Copies (synchronous with respect to the host). to_device accepts any CPU tensor (made contiguous first);
// to_host accepts a contiguous CUDA tensor.
Tensor to_device(const Tensor& host);
Tensor to_host(const Tensor& device);

// Device memory bandwidth in bytes/s from timed device-to-device copies of `bytes` (each copy reads and
// writes `bytes`; both are counted). The physical reference of memory-bound benchmarks.
double copy_bandwidth(size_t bytes, int iterations = 10);

}  // namespace sy::cuda
