// CUDA device memory: a caching allocator over cudaMalloc'd blocks, the engine's default stream, and
// host <-> device tensor copies. Compiled only in CUDA builds (SY_HAS_CUDA); include it only under that macro.
// Deliberately not here: managed memory (never used), multiple streams or devices per process (one device,
// device 0, and one stream for now), memory pools shared with other libraries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

// A private memory pool. While a PoolScope is alive on a thread, that thread's device allocations come from
// the pool and go back to it when their storages die (never to the shared cache); the pool returns its blocks
// to the driver once it and every storage from it are gone. CUDA graphs capture inside a scope of their own
// pool, so the addresses a graph has baked in are never handed to other work.
class MemoryPool;
std::shared_ptr<MemoryPool> new_memory_pool();
class PoolScope {
 public:
  explicit PoolScope(std::shared_ptr<MemoryPool> pool);
  ~PoolScope();
  PoolScope(const PoolScope&) = delete;
  PoolScope& operator=(const PoolScope&) = delete;

 private:
  std::shared_ptr<MemoryPool> previous_;
};

// A CUDA graph of work queued on stream(). capture() runs `work` once with the stream in capture mode (the
// kernels are recorded, not run; allocations come from the graph's private pool; any host synchronisation
// inside is an error), then instantiates the graph; replay() launches it on stream(). Tensors that `work`
// leaves alive (outputs) keep their addresses for every replay.
class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void capture(const std::function<void()>& work);
  void replay();
  bool captured() const { return exec_ != nullptr; }

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  std::shared_ptr<MemoryPool> pool_;
};

// Copies `bytes` from host memory into device memory at `dst`, queued on stream() (the host buffer may be
// reused when the call returns).
void upload(void* dst, const void* src, size_t bytes);

// Page-locked host memory (cudaMallocHost): copies between it and the device are DMA queued on stream(),
// without the driver's staging copy through a bounce buffer, so the host need not wait for them. Move-only;
// contents undefined after allocation.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Queued copies on stream() between pinned memory (bytes at `offset` of the buffer, in range) and the device.
// The host must leave an upload's source unchanged, and not read a download's destination, until a later
// synchronisation. upload_rows_async copies `rows` rows of `row_bytes` (source rows `src_pitch` apart, device
// rows `dst_pitch` apart), one call.
void upload_async(void* dst, const PinnedBuffer& src, size_t offset, size_t bytes);
void upload_rows_async(void* dst, size_t dst_pitch, const PinnedBuffer& src, size_t offset, size_t src_pitch,
                       size_t row_bytes, size_t rows);
void download_async(PinnedBuffer& dst, size_t offset, const void* src, size_t bytes);

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
