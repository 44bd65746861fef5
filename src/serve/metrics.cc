// Prometheus text rendering of the server's counters, gauges and histograms.
#include "switchyard/serve/metrics.h"

#include <algorithm>
#include <sstream>

namespace sy::serve {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t b = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[b];
  sum_ += value;
  ++count_;
}

int64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Histogram::render(const std::string& name, const std::string& help, std::string& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream s;
  s << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    s << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cumulative << "\n";
  }
  cumulative += counts_.back();
  s << name << "_bucket{le=\"+Inf\"} " << cumulative << "\n";
  s << name << "_sum " << sum_ << "\n" << name << "_count " << count_ << "\n";
  out += s.str();
}

namespace {
std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}
void gauge(std::ostringstream& s, const char* name, const char* help, const char* type, double value) {
  s << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value << "\n";
}
}  // namespace

ServerMetrics::ServerMetrics() : ttft_(latency_buckets()), itl_(latency_buckets()), e2e_(latency_buckets()) {}

void ServerMetrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void ServerMetrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

std::string ServerMetrics::render(const EngineGauges& g) const {
  std::ostringstream s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s << "# HELP switchyard_requests_total HTTP requests answered, by endpoint and status\n"
      << "# TYPE switchyard_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      s << "switchyard_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << "\n";
    }
    gauge(s, "switchyard_prompt_tokens_total", "Prompt tokens of admitted requests", "counter",
          static_cast<double>(prompt_tokens_));
    gauge(s, "switchyard_generation_tokens_total", "Tokens generated", "counter",
          static_cast<double>(generated_tokens_));
  }
  gauge(s, "switchyard_requests_running", "Sequences in the running batch", "gauge", static_cast<double>(g.running));
  gauge(s, "switchyard_requests_waiting", "Requests waiting for admission", "gauge", static_cast<double>(g.waiting));
  gauge(s, "switchyard_kv_blocks_total", "KV cache blocks in the pool", "gauge",
        static_cast<double>(g.kv_blocks_total));
  gauge(s, "switchyard_kv_blocks_used", "KV cache blocks referenced by sequences", "gauge",
        static_cast<double>(g.kv_blocks_in_use));
  gauge(s, "switchyard_kv_blocks_cached_idle", "Unreferenced KV blocks kept for prefix reuse", "gauge",
        static_cast<double>(g.kv_blocks_cached));
  gauge(s, "switchyard_prefix_cache_queried_tokens_total", "Prompt tokens looked up in the prefix cache", "counter",
        static_cast<double>(g.prefix_queried_tokens));
  gauge(s, "switchyard_prefix_cache_hit_tokens_total", "Prompt tokens served from cached KV blocks", "counter",
        static_cast<double>(g.prefix_hit_tokens));
  gauge(s, "switchyard_prefix_cache_hit_rate", "Hit tokens / queried tokens since start", "gauge",
        g.prefix_queried_tokens > 0 ? static_cast<double>(g.prefix_hit_tokens) / g.prefix_queried_tokens : 0.0);
  gauge(s, "switchyard_kv_evictions_total", "Cached KV blocks evicted for reuse", "counter",
        static_cast<double>(g.evictions));
  gauge(s, "switchyard_preemptions_total", "Sequences preempted (recomputed later) for lack of KV blocks",
        "counter", static_cast<double>(g.preemptions));
  gauge(s, "switchyard_engine_steps_total", "Batched forward steps", "counter", static_cast<double>(g.steps));
  gauge(s, "switchyard_engine_batch_tokens_total", "Tokens run through batched forward steps", "counter",
        static_cast<double>(g.batch_tokens));
  s << "# HELP switchyard_expert_tokens_total Tokens routed to each expert\n"
    << "# TYPE switchyard_expert_tokens_total counter\n";
  for (size_t l = 0; l < g.expert_tokens.size(); ++l) {
    for (size_t e = 0; e < g.expert_tokens[l].size(); ++e) {
      s << "switchyard_expert_tokens_total{layer=\"" << l << "\",expert=\"" << e << "\"} " << g.expert_tokens[l][e]
        << "\n";
    }
  }
  std::string out = s.str();
  ttft_.render("switchyard_time_to_first_token_seconds", "Submission to first generated token", out);
  itl_.render("switchyard_inter_token_latency_seconds", "Time between consecutive generated tokens", out);
  e2e_.render("switchyard_request_latency_seconds", "Submission to the last token", out);
  return out;
}

}  // namespace sy::serve
