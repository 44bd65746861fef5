// write_safetensors: serialises CPU tensors to a .safetensors file atomically (temporary file, fsync, rename).
// Tensors are laid out by decreasing element size, then by name, and the header is padded with spaces to a
// multiple of 8 bytes, so every tensor starts aligned to its element size and loads zero-copy.
// Not a sharding writer: one call writes one file.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

namespace {
constexpr const char* kComponent = "safetensors";
}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  using nlohmann::json;
  std::set<std::string> seen;
  std::vector<size_t> order;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    SY_REQUIRE(name != "__metadata__", InvalidArgument, kComponent, "\"__metadata__\" is reserved and cannot ",
               "name a tensor (writing ", path, ")");
    SY_REQUIRE(seen.insert(name).second, InvalidArgument, kComponent, "tensor name \"", name,
               "\" is given twice (writing ", path, ")");
    SY_REQUIRE(t.defined(), InvalidArgument, kComponent, "tensor \"", name, "\" is undefined (writing ", path, ")");
    SY_REQUIRE(t.device() == Device::kCpu, InvalidArgument, kComponent, "tensor \"", name, "\" is on ",
               device_name(t.device()), "; copy it to the cpu before writing ", path);
    order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    size_t sa = dtype_size(tensors[a].second.dtype()), sb = dtype_size(tensors[b].second.dtype());
    if (sa != sb) return sa > sb;
    return tensors[a].first < tensors[b].first;
  });

  json header = json::object();
  if (!metadata.empty()) {
    json meta = json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    const uint64_t bytes = t.nbytes();
    header[name] = {{"dtype", dtype_to_safetensors(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw make_error<InvalidArgument>(kComponent, "cannot encode the header of ", path, " (", e.what(),
                                      "); tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  io_detail::AtomicFile out(path, kComponent);
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (size_t i : order) {
    const Tensor c = tensors[i].second.contiguous();
    if (c.nbytes()) out.write(c.raw(), c.nbytes());
  }
  out.commit();
}

}  // namespace sy
