// cuBLAS is opened on first use, not linked (src/kernels/cuda/cublas_loader.cu): in a CUDA build the library
// must still be found without a device, and the CLI must not load it at start (its static initialisers cost
// every process ~70 ms). A build without CUDA refuses clearly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "switchyard/core/error.h"
#include "switchyard/kernels/device.h"
#include "test_util.h"

namespace sy {
namespace {

TEST(CublasLoader, OpensTheLibraryWithoutADevice) {
  if (!cuda_compiled()) {
    EXPECT_THROW(load_cublas(), Unsupported);
    return;
  }
  const std::string path = load_cublas();
  EXPECT_NE(path.find("libcublas.so"), std::string::npos) << path;
}

TEST(CublasLoader, TheCliDoesNotLoadItAtStart) {
  test::TempDir tmp;
  const std::string log_path = tmp.file("ld_debug.txt");
  // The dynamic loader's own account of the libraries it opens for `switchyard --help`.
  const std::string cmd = "LD_DEBUG=libs " + test::cli_path() + " --help > /dev/null 2> " + log_path;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(log_path);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_NE(log.find("libc.so"), std::string::npos) << "LD_DEBUG=libs printed nothing:\n" << log;
  EXPECT_EQ(log.find("libcublas"), std::string::npos) << "the CLI loads cuBLAS at start";
}

}  // namespace
}  // namespace sy
