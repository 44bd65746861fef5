// libFuzzer target: sy::parse_safetensors over arbitrary bytes. A FormatError is the expected answer to bad
// input; any other exception, a crash or a sanitizer report is a bug. Accepted headers are re-checked for the
// invariants that SafetensorsFile relies on (offsets inside the image, sorted, no overlap, sizes consistent).
// Run: ./fuzz_safetensors_header -max_total_time=180 tests/fuzz/corpus_safetensors
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sy::SafetensorsHeader h;
  try {
    h = sy::parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const sy::FormatError&) {
    return 0;
  }
  // Anything else escaping (InternalError, std::exception) aborts the run as a finding.
  const uint64_t data_bytes = size - 8 - h.header_bytes;
  uint64_t prev_end = 0, prev_begin = 0;
  for (const sy::SafetensorsEntry& e : h.entries) {
    if (e.begin > e.end || e.end > data_bytes) std::abort();
    if (e.begin < prev_begin) std::abort();  // sorted by begin
    if (e.begin != e.end) {
      if (e.begin < prev_end) std::abort();  // overlap
      prev_end = e.end;
    }
    prev_begin = e.begin;
    if (static_cast<uint64_t>(sy::shape_numel(e.shape)) * sy::dtype_size(e.dtype) != e.end - e.begin) std::abort();
  }
  return 0;
}
