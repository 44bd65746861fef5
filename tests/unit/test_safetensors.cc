// safetensors happy paths: write/read round trips (f32, bf16, f16, ints, zero-size), zero-copy mapping,
// metadata, and checkpoint directories (single file, index.json shards, *.safetensors glob).
// Bad input lives in test_safetensors_errors.cc.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with its contents at the end of the test.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("sy_st_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

Tensor iota_f32(const Shape& shape, float scale = 1.f) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * static_cast<float>(i) - 3.f;
  return Tensor::from_vector(shape, v);
}

TEST_F(SafetensorsTest, RoundTripFloatTypes) {
  Tensor a = iota_f32({2, 3});
  Tensor b = iota_f32({4, 5}, 0.5f).to(DType::kBF16);
  Tensor c = iota_f32({7}, 0.25f).to(DType::kF16);
  write_safetensors(path("m.safetensors"), {{"a", a}, {"b.weight", b}, {"c", c}}, {{"format", "pt"}});

  SafetensorsFile f(path("m.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b.weight", "c"}));
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().header_bytes % 8, 0u);
  for (const auto& [name, want] : std::vector<std::pair<std::string, Tensor>>{{"a", a}, {"b.weight", b}, {"c", c}}) {
    Tensor got = f.tensor(name);
    EXPECT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(got.shape(), want.shape()) << name;
    ASSERT_EQ(got.nbytes(), want.nbytes());
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << name;
  }
  EXPECT_EQ(f.entry("b.weight").dtype, DType::kBF16);
  EXPECT_FLOAT_EQ(f.tensor("a").item(4), 1.f);
}

TEST_F(SafetensorsTest, RoundTripIntsZeroSizeAndStrided) {
  Tensor i64 = iota_f32({3}).to(DType::kI64);
  Tensor i8 = iota_f32({5}).to(DType::kI8);
  Tensor empty = Tensor::empty({0, 4}, DType::kF32);
  Tensor scalar = Tensor::full({}, 2.5f);
  Tensor strided = iota_f32({4, 6}).slice(1, 1, 3);  // (4, 2), non-contiguous
  write_safetensors(path("m.safetensors"),
                    {{"i64", i64}, {"i8", i8}, {"empty", empty}, {"scalar", scalar}, {"strided", strided}});
  SafetensorsFile f(path("m.safetensors"));
  EXPECT_EQ(f.tensor("i64").to_f32_vector(), i64.to_f32_vector());
  EXPECT_EQ(f.tensor("i8").to_f32_vector(), i8.to_f32_vector());
  EXPECT_EQ(f.tensor("empty").shape(), (Shape{0, 4}));
  EXPECT_EQ(f.tensor("empty").numel(), 0);
  EXPECT_EQ(f.tensor("scalar").shape(), Shape{});
  EXPECT_FLOAT_EQ(f.tensor("scalar").item(), 2.5f);
  EXPECT_EQ(f.tensor("strided").to_f32_vector(), strided.to_f32_vector());
  EXPECT_TRUE(f.header().metadata.empty());
}

TEST_F(SafetensorsTest, EmptyTensorList) {
  write_safetensors(path("m.safetensors"), {});
  SafetensorsFile f(path("m.safetensors"));
  EXPECT_TRUE(f.names().empty());
}

TEST_F(SafetensorsTest, TensorsAreZeroCopyViewsOfTheMapping) {
  write_safetensors(path("m.safetensors"), {{"w", iota_f32({16, 16})}, {"h", iota_f32({8}).to(DType::kBF16)}});
  Tensor w, h;
  const uint8_t* lo = nullptr;
  {
    SafetensorsFile f(path("m.safetensors"));
    w = f.tensor("w");
    h = f.tensor("h");
    EXPECT_FALSE(w.storage()->owned());
    // The file image starts 8 + N bytes before the data section; each view lies inside it.
    const auto& e = f.entry("w");
    lo = static_cast<const uint8_t*>(w.raw()) - 8 - f.header().header_bytes - e.begin;
    const uint8_t* hi = lo + fs::file_size(path("m.safetensors"));
    for (const Tensor* t : {&w, &h}) {
      const auto* p = static_cast<const uint8_t*>(t->raw());
      EXPECT_GE(p, lo);
      EXPECT_LE(p + t->nbytes(), hi);
    }
    EXPECT_EQ(std::memcmp(lo + 8, "{", 1), 0);  // really the mapped header
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw()) % 4, 0u);
  }
  // The mapping outlives the SafetensorsFile while views exist.
  EXPECT_FLOAT_EQ(w.item(17), 14.f);
  EXPECT_FLOAT_EQ(h.item(3), 0.f);
}

TEST_F(SafetensorsTest, MisalignedTensorIsCopied) {
  // A header of odd length (no padding) leaves the f32 data misaligned; it must be copied, not viewed.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  if (header.size() % 4 == 0) header += ' ';
  float v[2] = {1.5f, -2.f};
  std::string img(8, '\0');
  for (int i = 0; i < 8; ++i) img[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  img += header + std::string(reinterpret_cast<const char*>(v), 8);
  std::ofstream(path("odd.safetensors"), std::ios::binary) << img;
  SafetensorsFile f(path("odd.safetensors"));
  Tensor w = f.tensor("w");
  EXPECT_TRUE(w.storage()->owned());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw()) % 4, 0u);
  EXPECT_EQ(w.to_f32_vector(), (std::vector<float>{1.5f, -2.f}));
}

TEST_F(SafetensorsTest, OverwriteIsAtomicAndLeavesNoTemporary) {
  write_safetensors(path("m.safetensors"), {{"a", iota_f32({2})}});
  write_safetensors(path("m.safetensors"), {{"b", iota_f32({3})}});
  SafetensorsFile f(path("m.safetensors"));
  EXPECT_EQ(f.names(), std::vector<std::string>{"b"});
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(SafetensorsTest, CheckpointSingleFile) {
  write_safetensors(path("model.safetensors"), {{"x", iota_f32({2, 2})}, {"y", iota_f32({3})}});
  SafetensorsCheckpoint ck(dir_.string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(ck.contains("x"));
  EXPECT_FALSE(ck.contains("z"));
  EXPECT_EQ(ck.entry("y").shape, Shape{3});
  EXPECT_FLOAT_EQ(ck.tensor("x").item(3), 0.f);
}

TEST_F(SafetensorsTest, CheckpointShardedWithIndex) {
  write_safetensors(path("model-00001-of-00002.safetensors"), {{"embed", iota_f32({4, 2})}, {"l0.w", iota_f32({2})}});
  write_safetensors(path("model-00002-of-00002.safetensors"), {{"l1.w", iota_f32({3}, 2.f).to(DType::kBF16)}});
  std::ofstream(path("model.safetensors.index.json")) << R"({
    "metadata": {"total_size": 50},
    "weight_map": {
      "embed": "model-00001-of-00002.safetensors",
      "l0.w": "model-00001-of-00002.safetensors",
      "l1.w": "model-00002-of-00002.safetensors"
    }})";
  // A stray file that the index does not name is ignored.
  write_safetensors(path("stray.safetensors"), {{"embed", iota_f32({1})}});

  SafetensorsCheckpoint ck(dir_.string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"embed", "l0.w", "l1.w"}));
  EXPECT_EQ(ck.tensor("embed").shape(), (Shape{4, 2}));
  Tensor l1 = ck.tensor("l1.w");
  EXPECT_EQ(l1.dtype(), DType::kBF16);
  EXPECT_FLOAT_EQ(l1.item(2), 1.f);
  EXPECT_EQ(ck.dir(), dir_.string());
}

TEST_F(SafetensorsTest, CheckpointGlobsEveryShardWithoutIndex) {
  write_safetensors(path("b.safetensors"), {{"second", iota_f32({1})}});
  write_safetensors(path("a.safetensors"), {{"first", iota_f32({2})}});
  std::ofstream(path("notes.txt")) << "not weights";
  SafetensorsCheckpoint ck(dir_.string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(ck.tensor("second").numel(), 1);
}

}  // namespace
}  // namespace sy
