// NumPy .npy reading and writing for f32, f16, i32, i64, i8 and u8 (little-endian, C order).
// Writes format 1.0 (2.0 only for huge headers) with the header padded to 64 bytes, as NumPy does.
// Reads format 1.0, 2.0 and 3.0 with a small parser for the header dict; not a general Python literal parser.
#include "switchyard/io/npy.h"

#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "io/atomic_file.h"
#include "switchyard/core/error.h"

namespace sy {

static_assert(std::endian::native == std::endian::little, "npy I/O assumes a little-endian host");

namespace {

constexpr const char* kComponent = "npy";
constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kAlign = 64;
constexpr uint64_t kMaxHeaderBytes = 1u << 20;  // a real header is under 200 bytes

const char* descr_of(DType dt) {
  switch (dt) {
    case DType::kF32: return "<f4";
    case DType::kF16: return "<f2";
    case DType::kI32: return "<i4";
    case DType::kI64: return "<i8";
    case DType::kI8: return "|i1";
    case DType::kU8: return "|u1";
    case DType::kBF16: return nullptr;
  }
  return nullptr;
}

bool dtype_of_descr(const std::string& d, DType* out) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kI32, DType::kI64, DType::kI8, DType::kU8}) {
    const std::string want = descr_of(dt);
    // '<', '|' and '=' (native, which is little-endian here) are all accepted.
    if (d.size() == want.size() && d.substr(1) == want.substr(1) && (d[0] == '<' || d[0] == '|' || d[0] == '=')) {
      *out = dt;
      return true;
    }
  }
  return false;
}

// Parser over the header dict text: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string* descr, bool* fortran, Shape* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        *descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        *fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        *shape = tuple();
        have_shape = true;
      } else {
        throw error("unexpected key '", key, "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      if (peek() != '}') throw error("expected ',' or '}' at byte ", pos_);
    }
    ++pos_;
    if (!have_descr || !have_fortran || !have_shape) {
      throw error("must have the keys 'descr', 'fortran_order' and 'shape'");
    }
  }

 private:
  template <typename... Args>
  FormatError error(const Args&... args) const {
    return make_error<FormatError>(kComponent, "header of ", path_, " is malformed: ", args...,
                                   "; the file is corrupt or not an .npy file");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) throw error("expected '", c, "' at byte ", pos_);
    ++pos_;
  }
  std::string string_literal() {
    skip_space();
    char q = peek();
    if (q != '\'' && q != '"') throw error("expected a quoted string at byte ", pos_);
    size_t end = s_.find(q, pos_ + 1);
    if (end == std::string::npos) throw error("unterminated string at byte ", pos_);
    std::string out = s_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return out;
  }
  bool boolean() {
    skip_space();
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    throw error("expected True or False at byte ", pos_);
  }
  Shape tuple() {
    expect('(');
    Shape out;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) throw error("expected a dimension at byte ", pos_);
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        int digit = peek() - '0';
        if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) throw error("dimension too large");
        v = v * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long suffix
      out.push_back(v);
      skip_space();
      if (peek() == ',') {
        ++pos_;
      } else if (peek() != ')') {
        throw error("expected ',' or ')' in shape at byte ", pos_);
      }
    }
    ++pos_;
    return out;
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

}  // namespace

void write_npy(const std::string& path, const Tensor& tensor) {
  SY_REQUIRE(tensor.defined(), InvalidArgument, kComponent, "cannot write an undefined tensor to ", path);
  SY_REQUIRE(tensor.device() == Device::kCpu, InvalidArgument, kComponent, "tensor is on ",
             device_name(tensor.device()), "; copy it to the cpu before writing ", path);
  const char* descr = descr_of(tensor.dtype());
  SY_REQUIRE(descr != nullptr, InvalidArgument, kComponent, "NumPy has no ", dtype_name(tensor.dtype()),
             " type; convert the tensor (for example to f32) before writing ", path);

  std::string shape = "(";
  for (size_t i = 0; i < tensor.shape().size(); ++i) shape += std::to_string(tensor.shape()[i]) + ", ";
  if (tensor.shape().size() > 1) shape.resize(shape.size() - 2);      // "(2, 3)"
  else if (tensor.shape().size() == 1) shape.resize(shape.size() - 1);  // "(3,)"
  shape += ")";
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";

  // magic(6) + version(2) + length(2 or 4) + dict + padding + '\n' is a multiple of kAlign.
  size_t prefix = 10;
  uint8_t major = 1;
  size_t total = (prefix + dict.size() + 1 + kAlign - 1) / kAlign * kAlign;
  if (total - prefix > 0xffff) {
    major = 2;
    prefix = 12;
    total = (prefix + dict.size() + 1 + kAlign - 1) / kAlign * kAlign;
  }
  const size_t header_len = total - prefix;
  dict.append(header_len - dict.size() - 1, ' ');
  dict += '\n';

  std::string head(kMagic, 6);
  head += static_cast<char>(major);
  head += '\0';
  for (size_t i = 0; i < prefix - 8; ++i) head += static_cast<char>((header_len >> (8 * i)) & 0xff);

  const Tensor c = tensor.contiguous();
  io_detail::AtomicFile out(path, kComponent);
  out.write(head.data(), head.size());
  out.write(dict.data(), dict.size());
  if (c.nbytes()) out.write(c.raw(), c.nbytes());
  out.commit();
}

Tensor read_npy(const std::string& path) {
  std::error_code ec;
  SY_REQUIRE(!std::filesystem::is_directory(path, ec), IoError, kComponent, path,
             " is a directory; pass an .npy file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw make_error<IoError>(kComponent, "cannot open ", path, ": ", std::strerror(errno),
                              "; check the path and its permissions");
  }
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  SY_REQUIRE(end >= 0, IoError, kComponent, "cannot read ", path, " (is it a directory?)");
  const uint64_t file_size = static_cast<uint64_t>(end);
  in.seekg(0);
  auto read_exact = [&](void* dst, uint64_t n) {
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    SY_REQUIRE(in && static_cast<uint64_t>(in.gcount()) == n, IoError, kComponent, "error while reading ", path);
  };

  SY_REQUIRE(file_size >= 10, FormatError, kComponent, path, " is ", file_size,
             " bytes, too short for an .npy header; the file is truncated or not an .npy file");
  uint8_t pre[10];
  read_exact(pre, 10);
  SY_REQUIRE(std::memcmp(pre, kMagic, 6) == 0, FormatError, kComponent, path,
             " does not start with the .npy magic \\x93NUMPY; it is not an .npy file");
  const int major = pre[6], minor = pre[7];
  SY_REQUIRE((major >= 1 && major <= 3) && minor == 0, FormatError, kComponent, path, " has .npy format version ",
             major, ".", minor, "; only 1.0, 2.0 and 3.0 are read");
  uint64_t prefix = 10, header_len = pre[8] | (pre[9] << 8);
  if (major >= 2) {
    SY_REQUIRE(file_size >= 12, FormatError, kComponent, path, " is truncated inside its header");
    uint8_t more[2];
    read_exact(more, 2);
    header_len |= static_cast<uint64_t>(more[0]) << 16 | static_cast<uint64_t>(more[1]) << 24;
    prefix = 12;
  }
  SY_REQUIRE(header_len <= kMaxHeaderBytes && header_len <= file_size - prefix, FormatError, kComponent,
             "header length ", header_len, " runs past the end of ", path, " (", file_size,
             " bytes); the file is truncated");
  std::string text(header_len, '\0');
  if (header_len) read_exact(text.data(), header_len);

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(text, path).parse(&descr, &fortran, &shape);
  DType dt = DType::kF32;
  SY_REQUIRE(dtype_of_descr(descr, &dt), FormatError, kComponent, path, " holds dtype '", descr,
             "', which switchyard does not read (supported: <f4, <f2, <i4, <i8, |i1, |u1); convert it with "
             "numpy's astype");
  SY_REQUIRE(!fortran, FormatError, kComponent, path,
             " is in Fortran order; save it with np.ascontiguousarray(a) instead");

  uint64_t numel = 1;
  for (int64_t d : shape) {
    uint64_t u = static_cast<uint64_t>(d);
    SY_REQUIRE(u == 0 || numel <= std::numeric_limits<uint64_t>::max() / u, FormatError, kComponent, "shape ",
               shape_str(shape), " in ", path, " has too many elements");
    numel *= u;
  }
  const uint64_t data_bytes = file_size - prefix - header_len;
  const uint64_t es = dtype_size(dt);
  SY_REQUIRE(numel <= data_bytes / es && numel * es == data_bytes, FormatError, kComponent, path, " has ",
             data_bytes, " data bytes but shape ", shape_str(shape), " of '", descr, "' needs ",
             (numel <= std::numeric_limits<uint64_t>::max() / es ? std::to_string(numel * es) : "more"),
             "; the file is truncated or corrupt");

  Tensor t = Tensor::empty(shape, dt);
  if (data_bytes) read_exact(t.raw(), data_bytes);
  return t;
}

}  // namespace sy
