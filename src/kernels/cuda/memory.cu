// Caching allocator for device memory, the default stream and host <-> device tensor copies
// (switchyard/kernels/cuda_memory.h). Not here: per-stream pools, block splitting, managed memory.
//
// Blocks are cudaMalloc'd in size classes (bucket_size) and kept on per-class free lists when their storage
// dies, so steady-state inference does no cudaMalloc/cudaFree. All work is issued on one stream, so a block
// freed while a queued kernel still reads it is only reused by work queued after that kernel: stream order
// makes the reuse safe without events.
#include <map>
#include <mutex>
#include <vector>

#include "cuda_check.cuh"
#include "switchyard/kernels/cuda_memory.h"

namespace sy::cuda {

namespace {

struct Cache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // [bucket bytes] = cached blocks of that size
  AllocatorStats stats;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: storages may die during static destruction
  return *c;
}

void release(void* ptr, size_t bucket) noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.free_blocks[bucket].push_back(ptr);
  c.stats.bytes_in_use -= bucket;
  c.stats.bytes_cached += bucket;
}

void* acquire(size_t bucket) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find(bucket);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.stats.bytes_cached -= bucket;
      c.stats.bytes_in_use += bucket;
      c.stats.num_reuses++;
      return p;
    }
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bucket);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    empty_cache();  // give cached blocks of other sizes back and retry once
    err = cudaMalloc(&p, bucket);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    throw make_error<OutOfMemory>("cuda", "cannot allocate ", bucket, " bytes of device memory");
  }
  SY_CUDA_CHECK(err);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.bytes_in_use += bucket;
  c.stats.num_cuda_mallocs++;
  return p;
}

}  // namespace

class MemoryPool {
 public:
  ~MemoryPool() {
    for (auto& [bucket, blocks] : free_) {
      for (void* p : blocks) cudaFree(p);
    }
  }
  void* acquire(size_t bucket) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bucket);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      return p;
    }
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bucket);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw make_error<OutOfMemory>("cuda", "cannot allocate ", bucket, " bytes of device memory for a graph pool");
    }
    SY_CUDA_CHECK(err);
    return p;
  }
  void release(void* p, size_t bucket) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    free_[bucket].push_back(p);
  }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
};

namespace {
thread_local std::shared_ptr<MemoryPool> current_pool;
}  // namespace

std::shared_ptr<MemoryPool> new_memory_pool() { return std::make_shared<MemoryPool>(); }

PoolScope::PoolScope(std::shared_ptr<MemoryPool> pool) : previous_(std::move(current_pool)) {
  current_pool = std::move(pool);
}
PoolScope::~PoolScope() { current_pool = std::move(previous_); }

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t created = nullptr;
    SY_CUDA_CHECK(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking));
    return created;
  }();
  return s;
}

void synchronize() {
  SY_CUDA_CHECK(cudaStreamSynchronize(stream()));
  SY_CUDA_CHECK(cudaGetLastError());
}

AllocatorStats allocator_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [bucket, blocks] : c.free_blocks) {
    for (void* p : blocks) {
      cudaFree(p);  // errors here would only come from a dead context; nothing to recover
      c.stats.bytes_cached -= bucket;
    }
    blocks.clear();
  }
}

size_t bucket_size(size_t bytes) {
  // 256 KiB classes above 1 MiB: fine enough that weight tensors (often 1.5x a power of two) waste little.
  constexpr size_t kSmall = 512, kLarge = size_t{256} << 10, kSmallLimit = size_t{1} << 20;
  if (bytes == 0) bytes = 1;
  if (bytes < kSmallLimit) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

std::shared_ptr<Storage> allocate_storage(size_t bytes) {
  const size_t bucket = bucket_size(bytes);
  if (std::shared_ptr<MemoryPool> pool = current_pool) {
    void* p = pool->acquire(bucket);
    std::shared_ptr<void> keep(p, [pool, bucket](void* q) { pool->release(q, bucket); });
    return Storage::borrow(p, bytes, std::move(keep), Device::kCuda);
  }
  void* p = acquire(bucket);
  std::shared_ptr<void> keep(p, [bucket](void* q) { release(q, bucket); });
  return Storage::borrow(p, bytes, std::move(keep), Device::kCuda);
}

Graph::Graph() = default;

Graph::~Graph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

void Graph::capture(const std::function<void()>& work) {
  SY_REQUIRE(!captured(), InvalidArgument, "cuda", "a graph is captured once");
  pool_ = new_memory_pool();
  SY_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed));
  try {
    PoolScope scope(pool_);
    work();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(stream(), &broken);  // leave the stream usable
    if (broken) cudaGraphDestroy(broken);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  SY_CUDA_CHECK(cudaStreamEndCapture(stream(), &g));
  graph_ = g;
  cudaGraphExec_t exec = nullptr;
  SY_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
  exec_ = exec;
}

void Graph::replay() {
  SY_REQUIRE(captured(), InvalidArgument, "cuda", "replay of a graph that was not captured");
  SY_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), stream()));
}

void upload(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) SY_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);  // no throw from a destructor; a failure here leaks at worst
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
  other.ptr_ = nullptr;
  other.bytes_ = 0;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = other.ptr_;
    bytes_ = other.bytes_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

namespace {
void check_range(const char* op, const PinnedBuffer& b, size_t offset, size_t bytes) {
  SY_REQUIRE(offset <= b.size() && bytes <= b.size() - offset, InvalidArgument, "cuda", op, ": bytes [", offset,
             ", ", offset + bytes, ") of a pinned buffer of ", b.size());
}
}  // namespace

void upload_async(void* dst, const PinnedBuffer& src, size_t offset, size_t bytes) {
  check_range("upload_async", src, offset, bytes);
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, static_cast<const char*>(src.data()) + offset, bytes, cudaMemcpyHostToDevice,
                                stream()));
}

void upload_rows_async(void* dst, size_t dst_pitch, const PinnedBuffer& src, size_t offset, size_t src_pitch,
                       size_t row_bytes, size_t rows) {
  SY_REQUIRE(row_bytes <= src_pitch && row_bytes <= dst_pitch, InvalidArgument, "cuda",
             "upload_rows_async: rows of ", row_bytes, " bytes at pitches ", src_pitch, " / ", dst_pitch);
  check_range("upload_rows_async", src, offset, rows == 0 ? 0 : (rows - 1) * src_pitch + row_bytes);
  if (rows == 0 || row_bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, static_cast<const char*>(src.data()) + offset, src_pitch, row_bytes,
                                  rows, cudaMemcpyHostToDevice, stream()));
}

void download_async(PinnedBuffer& dst, size_t offset, const void* src, size_t bytes) {
  check_range("download_async", dst, offset, bytes);
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst.data()) + offset, src, bytes, cudaMemcpyDeviceToHost,
                                stream()));
}

void zero(void* ptr, size_t bytes) {
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream()));
}

Tensor to_device(const Tensor& host) {
  SY_REQUIRE(host.defined() && host.device() == Device::kCpu, InvalidArgument, "cuda",
             "to_device needs a defined CPU tensor, got ", host.defined() ? host.describe() : "undefined");
  Tensor src = host.contiguous();
  Tensor out = Tensor::empty(src.shape(), src.dtype(), Device::kCuda);
  if (src.nbytes() > 0) {
    SY_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice, stream()));
    synchronize();  // `src` may be a temporary: finish before it dies
  }
  return out;
}

Tensor to_host(const Tensor& device) {
  SY_REQUIRE(device.defined() && device.device() == Device::kCuda && device.is_contiguous(), InvalidArgument,
             "cuda", "to_host needs a contiguous CUDA tensor, got ",
             device.defined() ? device.describe() : "undefined");
  Tensor out = Tensor::empty(device.shape(), device.dtype());
  if (device.nbytes() > 0) {
    SY_CUDA_CHECK(cudaMemcpyAsync(out.raw(), device.raw(), device.nbytes(), cudaMemcpyDeviceToHost, stream()));
  }
  synchronize();
  return out;
}

double copy_bandwidth(size_t bytes, int iterations) {
  SY_REQUIRE(bytes > 0 && iterations > 0, InvalidArgument, "cuda", "copy_bandwidth needs bytes and iterations");
  auto src = allocate_storage(bytes), dst = allocate_storage(bytes);
  cudaEvent_t start, stop;
  SY_CUDA_CHECK(cudaEventCreate(&start));
  SY_CUDA_CHECK(cudaEventCreate(&stop));
  SY_CUDA_CHECK(cudaMemcpyAsync(dst->data(), src->data(), bytes, cudaMemcpyDeviceToDevice, stream()));  // warm-up
  SY_CUDA_CHECK(cudaEventRecord(start, stream()));
  for (int i = 0; i < iterations; ++i) {
    SY_CUDA_CHECK(cudaMemcpyAsync(dst->data(), src->data(), bytes, cudaMemcpyDeviceToDevice, stream()));
  }
  SY_CUDA_CHECK(cudaEventRecord(stop, stream()));
  SY_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  SY_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  SY_CUDA_CHECK(cudaEventDestroy(start));
  SY_CUDA_CHECK(cudaEventDestroy(stop));
  return 2.0 * static_cast<double>(bytes) * iterations / (ms * 1e-3);
}

}  // namespace sy::cuda
