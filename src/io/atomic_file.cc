// AtomicFile: temporary file + fsync + rename (see atomic_file.h).
#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "switchyard/core/error.h"

namespace sy::io_detail {

AtomicFile::AtomicFile(const std::string& path, const char* component)
    : path_(path), tmp_path_(path + ".tmp." + std::to_string(::getpid())), component_(component) {
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int err = errno;
    throw make_error<IoError>(component_, "cannot create ", tmp_path_, " to write ", path_, ": ",
                              std::strerror(err), "; check that the folder exists and is writable");
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFile::fail(const char* what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_path_.c_str());
  committed_ = true;  // nothing left to clean up
  throw make_error<IoError>(component_, "cannot write ", path_, " (", what, " failed: ", std::strerror(err),
                            "); check free disk space and permissions");
}

void AtomicFile::write(const void* data, size_t bytes) {
  SY_CHECK(fd_ >= 0, "write to a closed AtomicFile");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  SY_CHECK(fd_ >= 0, "commit of a closed AtomicFile");
  if (::fsync(fd_) != 0) fail("fsync", errno);
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("close", errno);
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) fail("rename", errno);
  committed_ = true;
}

}  // namespace sy::io_detail
