// ThreadPool: workers spin briefly on a generation counter, then sleep on a condition variable, so that
// the thousands of small loops in a decode step do not pay a futex wake each.
#include "switchyard/core/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "switchyard/core/env.h"
#include "switchyard/core/error.h"

namespace sy {

namespace {
// True inside a chunk of a running loop: nested loops then run serially on the calling thread.
thread_local bool t_inside_loop = false;

int threads_from_environment() {
  if (env_set("SY_NUM_THREADS")) return static_cast<int>(env_int("SY_NUM_THREADS", 1, 1, 4096));
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(threads_from_environment());
  return pool;
}

void ThreadPool::run_chunk(int index) {
  if (index < job_chunks_) {
    int64_t begin = job_n_ * index / job_chunks_;
    int64_t end = job_n_ * (index + 1) / job_chunks_;
    try {
      t_inside_loop = true;
      if (begin < end) (*job_)(begin, end);
      t_inside_loop = false;
    } catch (...) {
      t_inside_loop = false;
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!job_error_) job_error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little before sleeping: decode issues many short loops back to back.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < 20000; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen || stop_; });
      gen = generation_.load();
    }
    if (stop_) return;
    seen = gen;
    run_chunk(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int chunks = static_cast<int>(std::min<int64_t>(num_threads_, (n + grain - 1) / grain));
  if (chunks <= 1 || workers_.empty() || t_inside_loop) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunks_ = chunks;
  job_error_ = nullptr;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_chunk(0);
  while (pending_.load(std::memory_order_acquire) != 0) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  job_ = nullptr;
  if (job_error_) std::rethrow_exception(job_error_);
}

}  // namespace sy
