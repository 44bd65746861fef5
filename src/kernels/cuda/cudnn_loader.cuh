// cuDNN opened on first use (dlopen), like cuBLAS (cublas_loader.cuh): only the prefill attention can use it
// (cudnn_attention.cu), so a process that never asks for it pays nothing, and a machine without cuDNN runs
// every other op. The graph ("backend") API entry points are looked up by name. Not a public header.
#pragma once

#include <string>

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define SY_HAVE_CUDNN_HEADERS 1
#else
#define SY_HAVE_CUDNN_HEADERS 0
#endif

namespace sy::cuda::detail {

#if SY_HAVE_CUDNN_HEADERS
struct CudnnApi {
  decltype(&cudnnGetVersion) get_version;
  decltype(&cudnnGetErrorString) error_string;
  decltype(&cudnnGetLastErrorString) last_error;
  decltype(&cudnnCreate) create;
  decltype(&cudnnSetStream) set_stream;
  decltype(&cudnnBackendCreateDescriptor) create_descriptor;
  decltype(&cudnnBackendDestroyDescriptor) destroy_descriptor;
  decltype(&cudnnBackendSetAttribute) set_attribute;
  decltype(&cudnnBackendGetAttribute) get_attribute;
  decltype(&cudnnBackendFinalize) finalize;
  decltype(&cudnnBackendExecute) execute;
  size_t version = 0;  // cudnnGetVersion(): 91002 for 9.10.2
};

// The loaded library, or null with the reason in *why: SY_CUDNN_LIBRARY (a path) when set, else
// libcudnn.so.9 from the loader's search path, next to the CUDA runtime in use, or in the toolkit this was
// built with. Opened once per process; later calls return the same answer.
const CudnnApi* cudnn_or_null(std::string* why);
#endif

}  // namespace sy::cuda::detail
