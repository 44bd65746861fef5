// A fixed pool of worker threads for data-parallel loops on the CPU.
// Sized from the machine (hardware_concurrency, or SY_NUM_THREADS). The calling thread takes part in every
// loop, so a pool of N threads has N-1 workers. Not a task scheduler: one parallel_for runs at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sy {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread (at least `grain` items
  // each). Blocks until all chunks are done; rethrows the first exception a chunk threw.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // The process-wide pool.
  static ThreadPool& global();

 private:
  void worker_loop(int index);
  void run_chunk(int index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex call_mutex_;  // serialises parallel_for calls from different threads
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  // The current job.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  std::exception_ptr job_error_;
  std::mutex error_mutex_;
};

// Shorthand for ThreadPool::global().parallel_for.
inline void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1) {
  ThreadPool::global().parallel_for(n, fn, grain);
}

}  // namespace sy
