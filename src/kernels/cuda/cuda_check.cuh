// Check macros for CUDA runtime and cuBLAS calls: on failure they throw sy::Error naming the call, the
// error name and file:line. Library code never aborts on a CUDA error.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cublas_loader.cuh"
#include "switchyard/core/error.h"

#define SY_CUDA_CHECK(call)                                                                              \
  do {                                                                                                   \
    cudaError_t sy_status_ = (call);                                                                     \
    if (sy_status_ != cudaSuccess) {                                                                     \
      throw ::sy::Error(::sy::detail::concat("[cuda] ", #call, " failed: ", cudaGetErrorName(sy_status_), \
                                             " (", cudaGetErrorString(sy_status_), ") at ", __FILE__, ":", \
                                             __LINE__));                                                 \
    }                                                                                                    \
  } while (0)

#define SY_CUBLAS_CHECK(call)                                                                             \
  do {                                                                                                    \
    cublasStatus_t sy_status_ = (call);                                                                   \
    if (sy_status_ != CUBLAS_STATUS_SUCCESS) {                                                            \
      throw ::sy::Error(::sy::detail::concat("[cublas] ", #call, " failed: ",                           \
                                             ::sy::cuda::detail::cublas().status_name(sy_status_),     \
                                             " at ", __FILE__, ":", __LINE__));                           \
    }                                                                                                     \
  } while (0)
