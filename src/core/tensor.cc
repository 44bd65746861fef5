// Tensor and Storage: allocation, views and converting copies (CPU only; other devices go through their backend).
#include "switchyard/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

#include "switchyard/core/error.h"
#if SY_HAS_CUDA
#include "switchyard/kernels/cuda_memory.h"
#endif

namespace sy {

const char* device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
#if SY_HAS_CUDA
  if (device == Device::kCuda) return cuda::allocate_storage(bytes);  // cached device block
#endif
  if (device != Device::kCpu) {
    throw make_error<Unsupported>("tensor", "Storage::allocate on ", device_name(device),
                                  " must go through that device's allocator");
  }
  auto s = std::shared_ptr<Storage>(new Storage());
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  s->data_ = std::aligned_alloc(64, rounded);
  if (!s->data_) throw make_error<OutOfMemory>("tensor", "cannot allocate ", bytes, " bytes on cpu");
  s->bytes_ = bytes;
  s->owned_ = true;
  s->device_ = device;
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes, std::shared_ptr<void> keep_alive, Device device) {
  auto s = std::shared_ptr<Storage>(new Storage());
  s->data_ = data;
  s->bytes_ = bytes;
  s->owned_ = false;
  s->device_ = device;
  s->keep_alive_ = std::move(keep_alive);
  return s;
}

Storage::~Storage() {
  if (owned_ && device_ == Device::kCpu) std::free(data_);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    SY_REQUIRE(d >= 0, InvalidArgument, "tensor", "negative dimension in shape ", shape_str(shape));
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.storage_ = Storage::allocate(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
#if SY_HAS_CUDA
  if (device == Device::kCuda) {
    cuda::zero(t.raw(), t.nbytes());
    return t;
  }
#endif
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype) {
  Tensor t = empty(shape, DType::kF32);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
  return dtype == DType::kF32 ? t : t.to(dtype);
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  SY_REQUIRE(shape_numel(shape) == static_cast<int64_t>(values.size()), InvalidArgument, "tensor", "shape ",
             shape_str(shape), " holds ", shape_numel(shape), " elements but ", values.size(), " were given");
  Tensor t = empty(shape, DType::kF32);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  size_t need = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  SY_REQUIRE(storage && byte_offset + need <= storage->size_bytes(), InvalidArgument, "tensor", "view of ",
             need, " bytes at offset ", byte_offset, " exceeds storage of ",
             storage ? storage->size_bytes() : 0, " bytes");
  Tensor t;
  t.storage_ = std::move(storage);
  t.byte_offset_ = byte_offset;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  SY_CHECK(d >= 0 && d < n, "dimension ", d, " of tensor ", describe());
  return shape_[d];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_) || numel() <= 1; }

void* Tensor::raw() const {
  SY_CHECK(storage_ != nullptr, "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + byte_offset_;
}

float* Tensor::f32() const {
  SY_CHECK(dtype_ == DType::kF32, "expected f32 tensor, got ", describe());
  return data<float>();
}
uint16_t* Tensor::u16() const {
  SY_CHECK(dtype_ == DType::kBF16 || dtype_ == DType::kF16, "expected bf16/f16 tensor, got ", describe());
  return data<uint16_t>();
}
int32_t* Tensor::i32() const {
  SY_CHECK(dtype_ == DType::kI32, "expected i32 tensor, got ", describe());
  return data<int32_t>();
}
int64_t* Tensor::i64() const {
  SY_CHECK(dtype_ == DType::kI64, "expected i64 tensor, got ", describe());
  return data<int64_t>();
}

Tensor Tensor::reshape(const Shape& shape) const {
  SY_CHECK(is_contiguous(), "reshape of a non-contiguous tensor ", describe());
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      SY_CHECK(infer < 0, "two -1 dimensions in reshape");
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known == 0 ? 0 : numel() / known;
  SY_REQUIRE(shape_numel(s) == numel(), InvalidArgument, "tensor", "cannot reshape ", describe(), " to ",
             shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  if (d < 0) d += dim();
  SY_CHECK(d >= 0 && d < dim(), "slice dimension ", d, " of ", describe());
  SY_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end, ") of dimension ", d,
           " of ", describe());
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(start * strides_[d]) * dtype_size(dtype_);
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int64_t i) const {
  SY_CHECK(dim() >= 1 && i >= 0 && i < shape_[0], "select ", i, " of ", describe());
  Tensor t = *this;
  t.byte_offset_ += static_cast<size_t>(i * strides_[0]) * dtype_size(dtype_);
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

namespace {
float load_as_f32(const void* p, DType dt) {
  switch (dt) {
    case DType::kF32: return *static_cast<const float*>(p);
    case DType::kBF16: return bf16_to_f32(*static_cast<const uint16_t*>(p));
    case DType::kF16: return f16_to_f32(*static_cast<const uint16_t*>(p));
    case DType::kI8: return *static_cast<const int8_t*>(p);
    case DType::kU8: return *static_cast<const uint8_t*>(p);
    case DType::kI32: return static_cast<float>(*static_cast<const int32_t*>(p));
    case DType::kI64: return static_cast<float>(*static_cast<const int64_t*>(p));
  }
  return 0.f;
}
void store_from_f32(void* p, DType dt, float v) {
  switch (dt) {
    case DType::kF32: *static_cast<float*>(p) = v; break;
    case DType::kBF16: *static_cast<uint16_t*>(p) = f32_to_bf16(v); break;
    case DType::kF16: *static_cast<uint16_t*>(p) = f32_to_f16(v); break;
    case DType::kI8: *static_cast<int8_t*>(p) = static_cast<int8_t>(v); break;
    case DType::kU8: *static_cast<uint8_t*>(p) = static_cast<uint8_t>(v); break;
    case DType::kI32: *static_cast<int32_t*>(p) = static_cast<int32_t>(v); break;
    case DType::kI64: *static_cast<int64_t*>(p) = static_cast<int64_t>(v); break;
  }
}
}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return to(dtype_);
}

Tensor Tensor::to(DType dtype) const {
  SY_CHECK(device() == Device::kCpu, "Tensor::to on ", device_name(device()));
  Tensor out = empty(shape_, dtype);
  const int64_t n = numel();
  const size_t in_es = dtype_size(dtype_), out_es = dtype_size(dtype);
  const char* src = static_cast<const char*>(raw());
  char* dst = static_cast<char*>(out.raw());
  if (is_contiguous() && dtype == dtype_) {
    std::memcpy(dst, src, nbytes());
    return out;
  }
  if (is_contiguous() && dtype_ == DType::kBF16 && dtype == DType::kF32) {
    const uint16_t* s = static_cast<const uint16_t*>(raw());
    float* d = out.f32();
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
    return out;
  }
  // General strided walk.
  std::vector<int64_t> idx(shape_.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t k = 0; k < idx.size(); ++k) off += idx[k] * strides_[k];
    const void* sp = src + off * in_es;
    void* dp = dst + i * out_es;
    if (dtype == dtype_) {
      std::memcpy(dp, sp, in_es);
    } else {
      store_from_f32(dp, dtype, load_as_f32(sp, dtype_));
    }
    for (int64_t k = static_cast<int64_t>(idx.size()) - 1; k >= 0; --k) {
      if (++idx[k] < shape_[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

float Tensor::item(int64_t i) const {
  SY_CHECK(is_contiguous() && i >= 0 && i < numel(), "item ", i, " of ", describe());
  return load_as_f32(static_cast<const char*>(raw()) + i * dtype_size(dtype_), dtype_);
}

std::vector<float> Tensor::to_f32_vector() const {
  Tensor c = to(DType::kF32);
  return std::vector<float>(c.f32(), c.f32() + c.numel());
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return detail::concat(dtype_name(dtype_), " ", shape_str(shape_), " ", device_name(device()));
}

}  // namespace sy
