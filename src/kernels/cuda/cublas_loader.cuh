// cuBLAS opened on first use (dlopen) instead of linked. Linking libcublas / libcublasLt makes every process
// run their static initialisers at start, GPU or not: an empty program linked against either takes ~70 ms and
// ~210 MB of resident pages on the CPU-only machine, which every `switchyard` command paid. The few entry
// points the ops call are looked up by name. Not a public header.
#pragma once

#include <cublas_v2.h>

namespace sy::cuda::detail {

struct CublasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasSetStream_v2) set_stream;
  // cublasGemmEx has a C++ overload (cudaDataType compute type) in the header: the library's own is this one.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  // The same C linkage declaration issue as gemm_ex (the header adds a static inline overload).
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long, const void*,
                                            cudaDataType, int, long long, const void*, void*, cudaDataType, int,
                                            long long, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasGemmGroupedBatchedEx) gemm_grouped_batched_ex;  // null when the library lacks it
  decltype(&cublasGetStatusName) status_name;
};

// The loaded library (libcublas.so.<major of the headers>, from the loader's search path, else next to the
// CUDA runtime this process uses). Throws sy::Unsupported naming the library and the loader's error when it
// cannot be opened or lacks an entry point.
const CublasApi& cublas();

}  // namespace sy::cuda::detail
