// premoe_bench: what PreMoe's lazy expert loading and task retrieval cost, on a synthetic bf16 Mixtral-shaped
// checkpoint written here (default 4 layers x 16 experts of 4.5 MiB each, ~300 MiB).
//   1. Bytes read from disk (/proc/self/io read_bytes, page cache dropped for the file with
//      posix_fadvise(DONTNEED) before each case) and file-backed resident memory (RssFile) after loading and
//      one forward pass, for the full model and for M = E/2, E/4 kept experts; each case runs in a fresh child
//      process. The physical reference printed beside each case: the bytes its weights occupy in the file.
//   2. Retrieval time per query for a store of --tasks synthetic tasks: store load, nearest-key search and
//      the first-MoE-layer probe, next to the peer: a full forward pass over the same prompt.
// Usage: premoe_bench [--dir DIR] [--hidden 512] [--inter 1536] [--experts 16] [--layers 4] [--tasks 100]
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "switchyard/io/safetensors.h"
#include "switchyard/model/model.h"
#include "switchyard/prune/prefetch.h"
#include "switchyard/prune/pruned_model.h"
#include "switchyard/prune/store.h"
#include "switchyard/prune/taer.h"
#include "switchyard/prune/tcess.h"

namespace fs = std::filesystem;
using namespace sy;

namespace {

struct Dims {
  int64_t vocab = 1024, hidden = 512, inter = 1536, experts = 16, layers = 4, heads = 8, kv_heads = 2;
};

int64_t proc_value(const char* file, const char* key) {
  std::ifstream in(file);
  std::string k;
  int64_t v = -1;
  while (in >> k) {
    if (k == key) {
      in >> v;
      return v;
    }
  }
  return -1;
}
int64_t read_bytes() { return proc_value("/proc/self/io", "read_bytes:"); }
int64_t rss_file_kib() { return proc_value("/proc/self/status", "RssFile:"); }
int64_t rss_anon_kib() { return proc_value("/proc/self/status", "RssAnon:"); }

void write_checkpoint(const std::string& dir, const Dims& d) {
  fs::create_directories(dir);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto add = [&](const std::string& name, const Shape& shape, float scale, float offset = 0.f) {
    Tensor t = Tensor::empty(shape, DType::kBF16);
    for (int64_t i = 0; i < t.numel(); ++i) t.u16()[i] = f32_to_bf16(offset + scale * normal(rng));
    tensors.emplace_back(name, t);
  };
  const int64_t hd = d.hidden / d.heads;
  const float s = 1.f / std::sqrt(static_cast<float>(d.hidden));
  add("model.embed_tokens.weight", {d.vocab, d.hidden}, 1.f);
  for (int l = 0; l < d.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {d.hidden}, 0.05f, 1.f);
    add(p + "post_attention_layernorm.weight", {d.hidden}, 0.05f, 1.f);
    add(p + "self_attn.q_proj.weight", {d.heads * hd, d.hidden}, s);
    add(p + "self_attn.k_proj.weight", {d.kv_heads * hd, d.hidden}, s);
    add(p + "self_attn.v_proj.weight", {d.kv_heads * hd, d.hidden}, s);
    add(p + "self_attn.o_proj.weight", {d.hidden, d.heads * hd}, s);
    add(p + "block_sparse_moe.gate.weight", {d.experts, d.hidden}, 2.f * s);
    for (int e = 0; e < d.experts; ++e) {
      const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      add(ep + "w1.weight", {d.inter, d.hidden}, s);
      add(ep + "w3.weight", {d.inter, d.hidden}, s);
      add(ep + "w2.weight", {d.hidden, d.inter}, 1.f / std::sqrt(static_cast<float>(d.inter)));
    }
  }
  add("model.norm.weight", {d.hidden}, 0.05f, 1.f);
  add("lm_head.weight", {d.vocab, d.hidden}, s);
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json cfg = {{"model_type", "mixtral"}, {"vocab_size", d.vocab}, {"hidden_size", d.hidden},
                        {"intermediate_size", d.inter}, {"num_hidden_layers", d.layers},
                        {"num_attention_heads", d.heads}, {"num_key_value_heads", d.kv_heads},
                        {"num_local_experts", d.experts}, {"num_experts_per_tok", 2},
                        {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 1e6},
                        {"torch_dtype", "bfloat16"}};
  std::ofstream(dir + "/config.json") << cfg.dump(2) << "\n";
}

void drop_file_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

std::vector<int64_t> random_ids(int n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int64_t> ids(n);
  for (auto& id : ids) id = static_cast<int64_t>(rng() % vocab);
  return ids;
}

// Runs `body` in a child process. The parent starts no worker threads before its last fork, so children
// never inherit a half-copied thread pool.
template <typename F>
void run_in_child(F body) {
  std::fflush(stdout);
  pid_t pid = ::fork();
  if (pid == 0) {
    body();
    std::fflush(stdout);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::printf("(child failed, status %d)\n", status);
}

// Runs `body(snapshot)` in a child process with the file's page cache dropped; body calls snapshot() while
// its model is still alive, which prints the bytes read so far and the resident memory.
template <typename F>
void measure(const char* label, const std::string& file, double expected_mib, F body) {
  drop_file_cache(file);
  run_in_child([&] {
    const int64_t r0 = read_bytes();
    body([&] {
      const double read_mib = static_cast<double>(read_bytes() - r0) / (1 << 20);
      std::printf("%-28s read %7.1f MiB  RssFile %7.1f MiB  RssAnon %6.1f MiB | its weights in the file %7.1f MiB\n",
                  label, read_mib, rss_file_kib() / 1024.0, rss_anon_kib() / 1024.0, expected_mib);
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  Dims d;
  std::string dir = (fs::temp_directory_path() / "sy-premoe-bench").string();
  int num_tasks = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--dir") dir = argv[i + 1];
    else if (a == "--hidden") d.hidden = v;
    else if (a == "--inter") d.inter = v;
    else if (a == "--experts") d.experts = v;
    else if (a == "--layers") d.layers = v;
    else if (a == "--tasks") num_tasks = static_cast<int>(v);
  }
  const std::string model_dir = dir + "/model", store_dir = dir + "/store", file = model_dir + "/model.safetensors";
  fs::remove_all(dir);
  write_checkpoint(model_dir, d);
  const double file_mib = static_cast<double>(fs::file_size(file)) / (1 << 20);
  const double expert_mib = 3.0 * d.hidden * d.inter * 2 / (1 << 20);
  const double other_mib = file_mib - expert_mib * d.experts * d.layers;
  std::printf("checkpoint: %s, %.1f MiB (%lld layers x %lld experts of %.2f MiB; %.1f MiB of other weights)\n",
              file.c_str(), file_mib, static_cast<long long>(d.layers), static_cast<long long>(d.experts),
              expert_mib, other_mib);

  // Profile two tasks so the store exists (in a child: the parent must not start worker threads yet).
  const std::vector<int64_t> prompt = random_ids(32, d.vocab, 1);
  run_in_child([&] {
    auto model = Model::load(model_dir);
    prune::TaskStore store = prune::TaskStore::open_or_create(
        store_dir, prune::describe_model(model_dir, model->config()), {});
    store.put(prune::make_task("a", prune::compute_tcess(*model, {random_ids(256, d.vocab, 2)}, {}), "random"));
    store.put(prune::make_task("b", prune::compute_tcess(*model, {random_ids(256, d.vocab, 3)}, {}), "random"));
    store.save();
  });

  std::printf("\n1. bytes read and resident file pages after load + one 32-token forward (cold page cache)\n");
  measure("full model (all experts)", file, file_mib, [&](auto snapshot) {
    auto model = Model::load(model_dir);
    prune::prefetch_weights(model->weights());
    KvCache cache = model->new_cache(32);
    model->forward(prompt, cache, false);
    snapshot();
  });
  for (int64_t keep : {d.experts / 2, d.experts / 4}) {
    if (keep < 2) continue;
    const double want = other_mib + expert_mib * keep * d.layers;
    std::string label = "retrieve + keep " + std::to_string(keep);
    measure(label.c_str(), file, want, [&](auto snapshot) {
      prune::PrunedModel p = prune::load_pruned_for_prompt(model_dir, store_dir, static_cast<int>(keep), 0, prompt);
      KvCache cache = p.model->new_cache(32);
      p.model->forward(prompt, cache, false);
      snapshot();
    });
    label = "keep " + std::to_string(keep) + ", no prefetch";
    measure(label.c_str(), file, want, [&](auto snapshot) {
      prune::TaskStore store = prune::TaskStore::load(store_dir);
      std::unique_ptr<Model> pruned;
      {
        auto full = Model::load(model_dir);
        pruned = prune::make_pruned_model(
            *full, prune::select_experts(full->config(), store.task("a").rankings, static_cast<int>(keep)));
      }
      KvCache cache = pruned->new_cache(32);
      pruned->forward(prompt, cache, false);
      snapshot();
    });
  }

  std::printf("\n2. retrieval per query, store of %d synthetic tasks (%lld experts per key)\n", num_tasks,
              static_cast<long long>(d.experts));
  {
    auto model = Model::load(model_dir);
    prune::TaskStore store =
        prune::TaskStore::open_or_create(dir + "/store100", prune::describe_model(model_dir, model->config()), {});
    std::mt19937 rng(11);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int t = 0; t < num_tasks; ++t) {
      prune::TaskScores s;
      s.num_tokens = 100;
      for (int l = 0; l < d.layers; ++l) {
        prune::LayerScores ls{l, std::vector<double>(d.experts)};
        for (double& v : ls.scores) v = u(rng);
        s.layers.push_back(ls);
      }
      char name[32];
      std::snprintf(name, sizeof name, "task%03d", t);
      store.put(prune::make_task(name, s, "synthetic"));
    }
    store.save();
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    prune::TaskStore loaded = prune::TaskStore::load(dir + "/store100");
    const double load_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    std::vector<double> q(d.experts);
    const int reps = 20000;
    double sink = 0;
    t0 = clock::now();
    for (int i = 0; i < reps; ++i) {
      for (double& v : q) v = u(rng);
      sink += loaded.nearest(q).distance;
    }
    const double nearest_us = std::chrono::duration<double, std::micro>(clock::now() - t0).count() / reps;
    KvCache warm = model->new_cache(32);
    model->forward(prompt, warm, false);  // warm the page cache for both timings
    const int runs = 20;
    t0 = clock::now();
    for (int i = 0; i < runs; ++i) prune::first_layer_scores(*model, prompt, {});
    const double probe_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count() / runs;
    t0 = clock::now();
    for (int i = 0; i < runs; ++i) {
      KvCache cache = model->new_cache(32);
      model->forward(prompt, cache, false);
    }
    const double full_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count() / runs;
    std::printf("store load (%.0f KiB JSON)        %8.3f ms\n", fs::file_size(dir + "/store100/premoe_store.json") / 1024.0,
                load_ms);
    std::printf("nearest key, exact L2 (mean of %d) %8.3f us   (checksum %.3f)\n", reps, nearest_us, sink / reps);
    std::printf("first-MoE-layer probe, 32 tokens   %8.3f ms\n", probe_ms);
    std::printf("peer: full forward, 32 tokens      %8.3f ms\n", full_ms);
  }
  fs::remove_all(dir);
  return 0;
}
