// safetensors bad input: every malformed file, lying header and broken checkpoint directory must raise the
// right typed error with a message that names the problem; none may crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

// Runs `fn`, expects exception type E whose message contains every fragment.
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

// 8-byte little-endian length + header text + `data_bytes` zero bytes.
std::string image(const std::string& header, size_t data_bytes, uint64_t len_override = ~0ull) {
  uint64_t n = len_override == ~0ull ? header.size() : len_override;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

SafetensorsHeader parse(const std::string& img) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "test.safetensors");
}

class SafetensorsErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("sy_ste_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void put(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
  }
  fs::path dir_;
};

TEST(SafetensorsParse, AcceptsAValidImage) {
  auto h = parse(image(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
                       R"("a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},)"
                       R"("z":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},)"
                       R"("__metadata__":{"format":"pt"}}  )",
                       16));
  ASSERT_EQ(h.entries.size(), 3u);
  EXPECT_EQ(h.entries[0].name, "a");  // sorted by begin
  EXPECT_EQ(h.entries[2].name, "z");
  EXPECT_EQ(h.metadata.at("format"), "pt");
}

TEST(SafetensorsParse, TooShortForLength) {
  expect_error<FormatError>([] { parse("abc"); }, {"[safetensors]", "test.safetensors", "too short"});
}

TEST(SafetensorsParse, HeaderLengthPastEnd) {
  expect_error<FormatError>([] { parse(image("{}", 0, 9000)); },
                            {"header length 9000 runs past the end of test.safetensors (10 bytes)"});
  expect_error<FormatError>([] { parse(image("{}", 0, ~0ull - 1)); }, {"runs past the end"});
}

TEST(SafetensorsParse, HeaderCutShort) {
  std::string img = image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  img.resize(30);  // cut in the middle of the JSON
  expect_error<FormatError>([&] { parse(img); }, {"runs past the end"});
}

TEST(SafetensorsParse, NotJson) {
  expect_error<FormatError>([] { parse(image("{not json at all}", 0)); }, {"not valid JSON"});
  expect_error<FormatError>([] { parse(image("[1,2,3]", 0)); }, {"does not start with '{'"});
}

TEST(SafetensorsParse, HeaderMustBeObjectOfObjects) {
  expect_error<FormatError>([] { parse(image(R"({"a": 3})", 0)); }, {"tensor \"a\"", "must be an object"});
  expect_error<FormatError>([] { parse(image(R"({"__metadata__": {"k": 1}})", 0)); }, {"__metadata__", "string"});
  expect_error<FormatError>([] { parse(image(R"({"__metadata__": []})", 0)); }, {"__metadata__"});
}

TEST(SafetensorsParse, DeepNestingIsRejected) {
  std::string deep = "{\"a\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
  expect_error<FormatError>([&] { parse(image(deep, 0)); }, {"deeper"});
}

TEST(SafetensorsParse, DuplicateTensorName) {
  expect_error<FormatError>(
      [] {
        parse(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8));
      },
      {"\"a\" twice"});
}

TEST(SafetensorsParse, UnknownDtype) {
  expect_error<FormatError>([] { parse(image(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8)); },
                            {"tensor \"w\"", "unknown dtype \"F64\""});
  expect_error<FormatError>([] { parse(image(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4)); },
                            {"dtype"});
}

TEST(SafetensorsParse, BadShapes) {
  for (const char* shape : {"[-1]", "[1.5]", "\"2\"", "[[2]]", "[true]"}) {
    std::string h = std::string(R"({"w":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,4]}})";
    expect_error<FormatError>([&] { parse(image(h, 4)); }, {"tensor \"w\"", "shape"});
  }
  // numel * dtype_size overflows uint64_t.
  expect_error<FormatError>(
      [] {
        parse(image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4));
      },
      {"too many elements"});
  expect_error<FormatError>(
      [] { parse(image(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4)); },
      {"too many elements"});
}

TEST(SafetensorsParse, BadDataOffsets) {
  for (const char* off : {"[0]", "[0,4,8]", "[-4,0]", "[0.0,4]", "\"0-4\""}) {
    std::string h = std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") + off + "}}";
    expect_error<FormatError>([&] { parse(image(h, 4)); }, {"data_offsets"});
  }
  expect_error<FormatError>([] { parse(image(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4)); },
                            {"end before they begin"});
}

TEST(SafetensorsParse, OffsetsOutOfRange) {
  expect_error<FormatError>([] { parse(image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12)); },
                            {"tensor \"w\"", "[0, 16]", "past the end of the data section (12 bytes)"});
  expect_error<FormatError>(
      [] {
        parse(image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}})",
                    4));
      },
      {"past the end"});
}

TEST(SafetensorsParse, OverlappingTensors) {
  expect_error<FormatError>(
      [] {
        parse(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                    16));
      },
      {"\"a\" [0, 16)", "\"b\" [8, 16)", "overlap"});
  // An identical range twice is an overlap too.
  expect_error<FormatError>(
      [] {
        parse(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                    4));
      },
      {"overlap"});
}

TEST(SafetensorsParse, SizeDoesNotMatchShape) {
  expect_error<FormatError>([] { parse(image(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8)); },
                            {"tensor \"w\"", "hold 8 bytes", "(2, 3) of BF16 needs 12"});
}

TEST_F(SafetensorsErrors, MissingFile) {
  expect_error<IoError>([&] { SafetensorsFile f(path("nope.safetensors")); },
                        {"[safetensors] cannot open", "nope.safetensors", "No such file"});
}

TEST_F(SafetensorsErrors, EmptyFile) {
  put("empty.safetensors", "");
  expect_error<FormatError>([&] { SafetensorsFile f(path("empty.safetensors")); },
                            {"empty.safetensors is 0 bytes", "too short"});
}

TEST_F(SafetensorsErrors, TruncatedFile) {
  write_safetensors(path("m.safetensors"), {{"w", Tensor::zeros({64}, DType::kF32)}});
  auto full = fs::file_size(path("m.safetensors"));
  fs::resize_file(path("m.safetensors"), full - 4);  // data cut short
  expect_error<FormatError>([&] { SafetensorsFile f(path("m.safetensors")); }, {"tensor \"w\"", "past the end"});
  fs::resize_file(path("m.safetensors"), 20);  // header cut short
  expect_error<FormatError>([&] { SafetensorsFile f(path("m.safetensors")); },
                            {"runs past the end of", "(20 bytes)"});
}

TEST_F(SafetensorsErrors, DirectoryInsteadOfFile) {
  expect_error<IoError>([&] { SafetensorsFile f(dir_.string()); }, {"is a directory"});
}

TEST_F(SafetensorsErrors, MissingTensorName) {
  write_safetensors(path("model.safetensors"), {{"w", Tensor::zeros({2}, DType::kF32)}});
  SafetensorsFile f(path("model.safetensors"));
  EXPECT_FALSE(f.contains("v"));
  expect_error<FormatError>([&] { f.tensor("v"); }, {"no tensor named \"v\"", "model.safetensors"});
  SafetensorsCheckpoint ck(dir_.string());
  expect_error<FormatError>([&] { ck.tensor("model.layers.0.mlp.gate.weight"); },
                            {"[checkpoint]", "\"model.layers.0.mlp.gate.weight\" not found in", dir_.string()});
  expect_error<FormatError>([&] { ck.entry("v"); }, {"not found"});
}

TEST_F(SafetensorsErrors, MissingDirectory) {
  expect_error<IoError>([&] { SafetensorsCheckpoint ck(path("no_such_model")); },
                        {"[checkpoint] model directory", "no_such_model does not exist"});
}

TEST_F(SafetensorsErrors, DirectoryWithoutSafetensors) {
  put("config.json", "{}");
  expect_error<IoError>([&] { SafetensorsCheckpoint ck(dir_.string()); },
                        {"no .safetensors files found in", dir_.string()});
}

TEST_F(SafetensorsErrors, IndexNamesMissingShard) {
  write_safetensors(path("model-00001-of-00002.safetensors"), {{"a", Tensor::zeros({2}, DType::kF32)}});
  put("model.safetensors.index.json",
      R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})");
  expect_error<IoError>([&] { SafetensorsCheckpoint ck(dir_.string()); },
                        {"model-00002-of-00002.safetensors", "does not exist", "incomplete"});
}

TEST_F(SafetensorsErrors, IndexListsTensorAbsentFromShard) {
  write_safetensors(path("s1.safetensors"), {{"a", Tensor::zeros({2}, DType::kF32)}});
  put("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}})");
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); },
                            {"\"ghost\"", "s1.safetensors", "does not contain"});
}

TEST_F(SafetensorsErrors, MalformedIndex) {
  write_safetensors(path("s1.safetensors"), {{"a", Tensor::zeros({2}, DType::kF32)}});
  put("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors",)");
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); },
                            {"[checkpoint]", "model.safetensors.index.json is not valid JSON"});
  put("model.safetensors.index.json", R"({"metadata": {}})");
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); }, {"no \"weight_map\""});
  put("model.safetensors.index.json", R"({"weight_map": {"a": 1}})");
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); }, {"weight_map entry \"a\""});
  put("model.safetensors.index.json", R"({"weight_map": {"a": "../s1.safetensors"}})");
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); }, {"not a file name inside"});
}

TEST_F(SafetensorsErrors, DuplicateTensorAcrossShards) {
  write_safetensors(path("a.safetensors"), {{"w", Tensor::zeros({2}, DType::kF32)}});
  write_safetensors(path("b.safetensors"), {{"w", Tensor::zeros({2}, DType::kF32)}});
  expect_error<FormatError>([&] { SafetensorsCheckpoint ck(dir_.string()); },
                            {"\"w\" appears in both", "a.safetensors", "b.safetensors"});
}

TEST_F(SafetensorsErrors, WriteRejectsBadInput) {
  Tensor t = Tensor::zeros({2}, DType::kF32);
  expect_error<InvalidArgument>([&] { write_safetensors(path("m.safetensors"), {{"a", t}, {"a", t}}); },
                                {"\"a\" is given twice"});
  expect_error<InvalidArgument>([&] { write_safetensors(path("m.safetensors"), {{"__metadata__", t}}); },
                                {"reserved"});
  expect_error<InvalidArgument>([&] { write_safetensors(path("m.safetensors"), {{"u", Tensor()}}); },
                                {"undefined"});
  expect_error<IoError>([&] { write_safetensors(path("no/such/dir/m.safetensors"), {{"a", t}}); },
                        {"[safetensors] cannot create", "no/such/dir/m.safetensors"});
  EXPECT_FALSE(fs::exists(path("m.safetensors")));
}

}  // namespace
}  // namespace sy
