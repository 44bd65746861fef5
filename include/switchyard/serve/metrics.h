// Server metrics in the Prometheus text exposition format: counters, gauges and latency histograms.
// Thread-safe; the engine loop and the HTTP handlers both record into one ServerMetrics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace sy::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(const std::string& name, const std::string& help, std::string& out) const;
  int64_t count() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket (not cumulative); one extra for +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

// What the engine reports at scrape time.
struct EngineGauges {
  int64_t running = 0, waiting = 0;
  int64_t kv_blocks_total = 0, kv_blocks_in_use = 0, kv_blocks_cached = 0;
  int64_t prefix_queried_tokens = 0, prefix_hit_tokens = 0, evictions = 0, preemptions = 0;
  int64_t steps = 0, batch_tokens = 0;
  std::vector<std::vector<int64_t>> expert_tokens;  // [layer][expert]; empty for dense layers
};

class ServerMetrics {
 public:
  ServerMetrics();
  // One finished HTTP request on `endpoint` with `status`.
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  Histogram& time_to_first_token() { return ttft_; }
  Histogram& inter_token_latency() { return itl_; }
  Histogram& request_latency() { return e2e_; }
  std::string render(const EngineGauges& gauges) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  Histogram ttft_, itl_, e2e_;
};

}  // namespace sy::serve
