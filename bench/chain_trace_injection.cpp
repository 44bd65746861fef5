// A CUPTI injection library that records when every kernel of a CUDA program starts and ends on the GPU, for
// seeing where a decode step's time goes when its kernels overlap (programmatic dependent launch, CUDA
// graphs): Nsight Systems is not on the device machines and Nsight Compute runs kernels one at a time.
// Loaded by the CUDA driver through CUDA_INJECTION64_PATH (no change to the program); on exit it writes one
// line per kernel, `start_ns end_ns grid_x grid_y grid_z block_x cluster_x graph_node name`, to the file named
// by SY_CHAIN_TRACE_OUT (default chain_trace.txt). bench/chain_trace.sh builds it and reports the lines.
// Build (CUPTI 13 headers; the toolkit here ships libcupti without them):
//   g++ -O2 -shared -fPIC -I CUPTI_INCLUDE bench/chain_trace_injection.cpp -o libsy_chain_trace.so -lcupti
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct KernelRecord {
  uint64_t start, end, graph_node;
  int grid_x, grid_y, grid_z, block_x;
  unsigned cluster_x;
  std::string name;
};

std::mutex g_mutex;
std::vector<KernelRecord> g_records;

constexpr size_t kBufferBytes = size_t{16} << 20;

void report_error(const char* what, CUptiResult r) {
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  std::fprintf(stderr, "chain trace: %s failed: %s\n", what, text ? text : "unknown CUPTI error");
}

// The function's name without namespaces, template arguments or parameters: "sy::cuda::(anonymous
// namespace)::grouped_linear_kernel<true, true, 1>(...)" gives "grouped_linear_kernel<true, true, 1>".
std::string short_name(const char* mangled) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  // "(anonymous namespace)" is a namespace, not the parameter list (cutting at its '(' left an empty name).
  for (size_t at; (at = s.find("(anonymous namespace)")) != std::string::npos;) s.replace(at, 21, "anonymous");
  const size_t paren = s.find('(');
  if (paren != std::string::npos) s.resize(paren);
  // Drop namespaces before the last "::" that is not inside template arguments.
  int depth = 0;
  size_t cut = 0;
  for (size_t i = 0; i + 1 < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (depth == 0 && s[i] == ':' && s[i + 1] == ':') cut = i + 2;
  }
  s = s.substr(cut);
  for (char& c : s) c = c == ' ' ? '_' : c;
  return s.empty() ? "?" : s;  // the report reads nine fields
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    g_records.push_back(KernelRecord{k->start, k->end, k->graphNodeId, k->gridX, k->gridY, k->gridZ, k->blockX,
                                     k->clusterX, short_name(k->name ? k->name : "?")});
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS && dropped > 0)
    std::fprintf(stderr, "chain trace: %zu records dropped\n", dropped);
  std::free(buffer);
}

void write_records() {
  const CUptiResult r = cuptiActivityFlushAll(1);
  if (r != CUPTI_SUCCESS) report_error("cuptiActivityFlushAll", r);
  const char* path = std::getenv("SY_CHAIN_TRACE_OUT");
  if (!path || !*path) path = "chain_trace.txt";
  std::FILE* f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "chain trace: cannot write %s\n", path);
    return;
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const KernelRecord& k : g_records)
    std::fprintf(f, "%llu %llu %d %d %d %d %u %llu %s\n", static_cast<unsigned long long>(k.start),
                 static_cast<unsigned long long>(k.end), k.grid_x, k.grid_y, k.grid_z, k.block_x, k.cluster_x,
                 static_cast<unsigned long long>(k.graph_node), k.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "chain trace: %zu kernels -> %s\n", g_records.size(), path);
}

}  // namespace

// Called by the CUDA driver when it loads this library (CUDA_INJECTION64_PATH); 1 means success.
extern "C" int InitializeInjection(void) {
  CUptiResult r = cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  if (r != CUPTI_SUCCESS) {
    report_error("cuptiActivityRegisterCallbacks", r);
    return 0;
  }
  r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r != CUPTI_SUCCESS) {
    report_error("cuptiActivityEnable(CONCURRENT_KERNEL)", r);
    return 0;
  }
  std::atexit(write_records);
  return 1;
}
