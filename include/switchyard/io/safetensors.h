// safetensors reading (memory-mapped, zero-copy) and writing (atomic: write a temporary, then rename).
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__"},
// then the data section; offsets are relative to the data section. Every offset, length, dtype and overlap
// is validated before a tensor is handed out. Not a general checkpoint manager: see model/weights.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "switchyard/core/tensor.h"

namespace sy {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offset in the data section
  uint64_t end = 0;    // one past the last byte
};

struct SafetensorsHeader {
  uint64_t header_bytes = 0;               // N, the JSON length
  std::vector<SafetensorsEntry> entries;   // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Parses and validates a whole file image (header length, JSON, dtypes, shapes, offsets in range, no
// overlaps, sizes consistent with shape x dtype). `what` names the source in error messages. Throws
// FormatError. Pure function over bytes: the fuzz target calls it directly.
SafetensorsHeader parse_safetensors(const uint8_t* data, uint64_t size, const std::string& what);

// One memory-mapped .safetensors file.
class SafetensorsFile {
 public:
  // Throws IoError when the file cannot be opened or mapped, FormatError when it is malformed.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool contains(const std::string& name) const;
  const SafetensorsEntry& entry(const std::string& name) const;  // throws FormatError if absent
  // Zero-copy CPU view; the mapping stays alive while any returned tensor does.
  Tensor tensor(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;  // owns the mmap
  const uint8_t* base_ = nullptr;  // start of the file image
  uint64_t file_size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json, or (failing both) every *.safetensors file in the directory.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir);
  bool contains(const std::string& name) const;
  Tensor tensor(const std::string& name) const;  // throws FormatError naming the tensor and the directory
  const SafetensorsEntry& entry(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
};

// Writes tensors (any layout; written contiguous) to `path` atomically. Names must be unique.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sy
