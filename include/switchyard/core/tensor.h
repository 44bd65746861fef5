// Tensor: a small value type over shared storage (dtype, shape, strides in elements, device, offset).
// No autograd and no lazy graph: ops are free functions (switchyard/kernels/ops.h) that dispatch on device.
// Weights loaded from safetensors are zero-copy views of a memory map; the map lives as long as any view.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/core/dtype.h"

namespace sy {

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);

// A block of bytes on one device. Either owned (aligned allocation) or borrowed (an mmap region
// kept alive by `keep_alive`).
class Storage {
 public:
  // Owned, 64-byte aligned, uninitialised.
  static std::shared_ptr<Storage> allocate(size_t bytes, Device device = Device::kCpu);
  // Borrowed: `data` stays valid while `keep_alive` is held.
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, std::shared_ptr<void> keep_alive,
                                         Device device = Device::kCpu);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t size_bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool owned() const { return owned_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
  bool owned_ = false;
  std::shared_ptr<void> keep_alive_;
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() is false

  // New contiguous tensors.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::kCpu);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::kCpu);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::kF32);
  // f32 tensor holding a copy of `values`; numel must match shape.
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  // Contiguous view of existing storage starting at `byte_offset`.
  static Tensor view_of(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::kCpu; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  // Size of dimension d; negative d counts from the end.
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to element 0 of this view.
  void* raw() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }
  // Typed access with a dtype check (f32 -> float, bf16/f16 -> uint16_t, ...).
  float* f32() const;
  uint16_t* u16() const;  // bf16 or f16 bits
  int32_t* i32() const;
  int64_t* i64() const;

  // Views (no copy). reshape requires contiguity; -1 infers one dimension.
  Tensor reshape(const Shape& shape) const;
  // Rows [start, end) along dimension d.
  Tensor slice(int64_t d, int64_t start, int64_t end) const;
  // Sub-tensor at index i of dimension 0 (drops that dimension).
  Tensor select(int64_t i) const;

  // Copies.
  Tensor contiguous() const;
  Tensor to(DType dtype) const;  // converting copy (contiguous result); same dtype gives a contiguous copy
  Tensor clone() const { return to(dtype_); }
  // Element i of a contiguous tensor as float (any float dtype); for tests and small reads.
  float item(int64_t i = 0) const;
  std::vector<float> to_f32_vector() const;

  std::string describe() const;  // "bf16 (4, 8) cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t byte_offset_ = 0;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Shape strides_;  // in elements
};

// Contiguous strides for a shape.
Shape contiguous_strides(const Shape& shape);

}  // namespace sy
