// NumPy .npy files (format 1.0/2.0, little-endian, C order): f32, f16, i32, i64 write and read.
// Enough for logits dumps and test fixtures; not a general NumPy reader (no Fortran order, no objects).
#pragma once

#include <string>

#include "switchyard/core/tensor.h"

namespace sy {

// Writes atomically (temporary file then rename). Throws IoError.
void write_npy(const std::string& path, const Tensor& tensor);
// Reads into a new CPU tensor. Throws IoError / FormatError with the reason.
Tensor read_npy(const std::string& path);

}  // namespace sy
