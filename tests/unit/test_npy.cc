// .npy: round trips for every supported dtype and shape rank, the exact header layout NumPy expects,
// hand-written NumPy-style files, and each malformed file raising a typed error.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "switchyard/core/error.h"
#include "switchyard/io/npy.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("sy_npy_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void put(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
  }
  std::string slurp(const std::string& name) const {
    std::ifstream in(path(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir_;
};

// A NumPy 1.0 file image with the given dict text (not padded) and raw data.
std::string npy_image(const std::string& dict, const std::string& data, int major = 1) {
  std::string h = dict + "\n";
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>((h.size() >> 8) & 0xff);
  if (major >= 2) out += std::string(2, '\0');
  return out + h + data;
}

template <typename E, typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception";
  } catch (const E& e) {
    std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST_F(NpyTest, RoundTripEveryDtype) {
  Tensor base = Tensor::from_vector({2, 3}, {-3.f, -1.5f, 0.f, 1.f, 2.5f, 100.f});
  for (DType dt : {DType::kF32, DType::kF16, DType::kI32, DType::kI64, DType::kI8, DType::kU8}) {
    Tensor t = dt == DType::kU8 ? base.reshape({6}).slice(0, 2, 6).to(dt) : base.to(dt);
    write_npy(path("t.npy"), t);
    Tensor r = read_npy(path("t.npy"));
    EXPECT_EQ(r.dtype(), dt) << dtype_name(dt);
    EXPECT_EQ(r.shape(), t.shape());
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << dtype_name(dt);
    EXPECT_EQ(fs::file_size(path("t.npy")) - t.nbytes(), 128u);  // header padded to a multiple of 64 bytes
  }
}

TEST_F(NpyTest, RoundTripShapes) {
  for (const Shape& s : {Shape{}, Shape{0}, Shape{5}, Shape{2, 0, 3}, Shape{1, 2, 3, 4}}) {
    Tensor t = Tensor::full(s, 1.5f);
    write_npy(path("t.npy"), t);
    Tensor r = read_npy(path("t.npy"));
    EXPECT_EQ(r.shape(), s) << shape_str(s);
    EXPECT_EQ(r.to_f32_vector(), t.to_f32_vector());
  }
}

TEST_F(NpyTest, WritesTheHeaderNumpyWrites) {
  write_npy(path("t.npy"), Tensor::zeros({3}, DType::kF32));
  std::string bytes = slurp("t.npy");
  ASSERT_EQ(bytes.size(), 128u + 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8, 118);
  EXPECT_EQ(bytes.substr(10, 118).find("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"), 0u);
  EXPECT_EQ(bytes[127], '\n');
  write_npy(path("t.npy"), Tensor::zeros({2, 3}, DType::kF32));
  EXPECT_NE(slurp("t.npy").find("'shape': (2, 3), }"), std::string::npos);
}

TEST_F(NpyTest, ReadsHandWrittenVariants) {
  float v[2] = {1.f, -2.f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  // Other key order, double quotes, no trailing comma, format 2.0.
  put("a.npy", npy_image(R"({"shape": (2,), "fortran_order": False, "descr": "<f4"})", data, 2));
  Tensor a = read_npy(path("a.npy"));
  EXPECT_EQ(a.shape(), Shape{2});
  EXPECT_FLOAT_EQ(a.item(1), -2.f);
  put("b.npy", npy_image("{'descr': '|i1', 'fortran_order': False, 'shape': (1, 2), }", "\x05\xff"));
  Tensor b = read_npy(path("b.npy"));
  EXPECT_EQ(b.dtype(), DType::kI8);
  EXPECT_FLOAT_EQ(b.item(1), -1.f);
}

TEST_F(NpyTest, WriteRejectsBf16AndReportsIo) {
  expect_error<InvalidArgument>([&] { write_npy(path("t.npy"), Tensor::zeros({2}, DType::kBF16)); },
                                {"[npy]", "bf16"});
  expect_error<IoError>([&] { write_npy(path("missing/t.npy"), Tensor::zeros({2}, DType::kF32)); },
                        {"[npy] cannot create", "missing/t.npy"});
}

TEST_F(NpyTest, MissingAndEmptyFiles) {
  expect_error<IoError>([&] { read_npy(path("nope.npy")); }, {"[npy] cannot open", "nope.npy"});
  expect_error<IoError>([&] { read_npy(dir_.string()); }, {"is a directory"});
  put("empty.npy", "");
  expect_error<FormatError>([&] { read_npy(path("empty.npy")); }, {"0 bytes", "too short"});
}

TEST_F(NpyTest, BadMagicAndVersion) {
  put("m.npy", std::string(64, 'x'));
  expect_error<FormatError>([&] { read_npy(path("m.npy")); }, {"magic"});
  std::string img = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd");
  img[6] = 9;
  put("v.npy", img);
  expect_error<FormatError>([&] { read_npy(path("v.npy")); }, {"version 9.0"});
}

TEST_F(NpyTest, HeaderLengthPastEnd) {
  std::string img = npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  img.resize(30);
  put("t.npy", img);
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"runs past the end", "(30 bytes)"});
}

TEST_F(NpyTest, MalformedDicts) {
  const char* bad[] = {
      "not a dict",
      "{'descr': '<f4', 'fortran_order': False}",                         // no shape
      "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }",        // bad bool
      "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",       // negative dim
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,, }",         // broken tuple
      "{'descr': '<f4, 'fortran_order': False, 'shape': (1,), }",         // broken quote
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",  // unknown key
      "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
  };
  for (const char* d : bad) {
    put("t.npy", npy_image(d, "abcd"));
    expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"[npy] header of", "malformed"});
  }
}

TEST_F(NpyTest, UnsupportedDtypeAndFortranOrder) {
  put("t.npy", npy_image("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", "abcdefgh"));
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"'<f8'", "astype"});
  put("t.npy", npy_image("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", "abcd"));
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"'>f4'"});
  put("t.npy", npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", std::string(16, '\0')));
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"Fortran order"});
}

TEST_F(NpyTest, DataSizeMismatch) {
  put("t.npy", npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", std::string(20, '\0')));
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"20 data bytes", "(2, 3)", "needs 24"});
  put("t.npy", npy_image("{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", ""));
  expect_error<FormatError>([&] { read_npy(path("t.npy")); }, {"too many elements"});
}

}  // namespace
}  // namespace sy
