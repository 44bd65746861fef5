// Where the lazily opened CUDA libraries (cuBLAS, cuDNN) are looked for. Not a public header.
#pragma once

#include <string>

namespace sy::cuda::detail {

// dlopen(soname) from the loader's search path, else next to the shared CUDA runtime this process uses, else
// in the toolkit this was built with (either may lie outside the search path). Returns the handle (kept open
// for the process's life) or null with the first attempt's dlerror() in *error.
void* open_cuda_library(const char* soname, std::string* error);

}  // namespace sy::cuda::detail
