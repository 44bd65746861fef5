// AtomicFile: writes a file as PATH.tmp.<pid>, then fsyncs and renames it over PATH, so that readers never see
// a half-written file and a crash leaves the old file intact. Private to src/io; not a buffered stream.
#pragma once

#include <cstddef>
#include <string>

namespace sy::io_detail {

class AtomicFile {
 public:
  // Creates the temporary file; throws IoError naming `component` and the path.
  AtomicFile(const std::string& path, const char* component);
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes (retrying short writes); throws IoError.
  void write(const void* data, size_t bytes);
  // fsync, close and rename over the final path; throws IoError.
  void commit();

 private:
  [[noreturn]] void fail(const char* what, int err);
  std::string path_;
  std::string tmp_path_;
  const char* component_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace sy::io_detail
