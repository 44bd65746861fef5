// SafetensorsFile: one .safetensors file mapped read-only (PROT_READ, MAP_PRIVATE) and validated by
// parse_safetensors before any tensor is handed out. Tensors are zero-copy views that keep the mapping alive;
// writing through one is a bug (the pages are read-only). Not the directory logic: see safetensors_checkpoint.cc.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

namespace {

constexpr const char* kComponent = "safetensors";

// Closes a file descriptor on scope exit.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw make_error<IoError>(kComponent, "cannot open ", path, ": ", std::strerror(err),
                              err == ENOENT ? "; check the path" : "; check the path and its permissions");
  }
  FdGuard guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw make_error<IoError>(kComponent, "cannot stat ", path, ": ", std::strerror(errno));
  }
  SY_REQUIRE(!S_ISDIR(st.st_mode), IoError, kComponent, path,
             " is a directory; pass a .safetensors file (or load the folder as a checkpoint)");
  SY_REQUIRE(S_ISREG(st.st_mode), IoError, kComponent, path, " is not a regular file");
  file_size_ = static_cast<uint64_t>(st.st_size);

  if (file_size_ > 0) {
    void* addr = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      throw make_error<IoError>(kComponent, "cannot memory-map ", path, " (", file_size_,
                                " bytes): ", std::strerror(errno));
    }
    const uint64_t len = file_size_;
    mapping_ = std::shared_ptr<void>(addr, [len](void* p) { ::munmap(p, len); });
    base_ = static_cast<const uint8_t*>(addr);
  }
  // An empty file has no mapping; parse_safetensors reports it as too short.
  static const uint8_t kEmpty[1] = {0};
  header_ = parse_safetensors(base_ ? base_ : kEmpty, file_size_, path);
  for (size_t i = 0; i < header_.entries.size(); ++i) index_[header_.entries[i].name] = i;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    throw make_error<FormatError>(kComponent, "no tensor named \"", name, "\" in ", path_, " (it holds ",
                                  index_.size(), " tensors); check the name against the checkpoint");
  }
  return header_.entries[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const uint64_t bytes = e.end - e.begin;
  // parse_safetensors proved 8 + header_bytes + end <= file_size_.
  const uint8_t* p = base_ + 8 + header_.header_bytes + e.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) == 0) {
    auto storage = Storage::borrow(const_cast<uint8_t*>(p), bytes, mapping_);
    return Tensor::view_of(std::move(storage), 0, e.shape, e.dtype);
  }
  // A writer that did not pad its header leaves elements misaligned; reading them in place would be
  // undefined behaviour, so such a tensor is copied into aligned memory instead.
  Tensor t = Tensor::empty(e.shape, e.dtype);
  if (bytes) std::memcpy(t.raw(), p, bytes);
  return t;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, i] : index_) out.push_back(name);
  return out;
}

}  // namespace sy
