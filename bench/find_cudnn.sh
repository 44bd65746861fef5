# Sourced by the GPU scripts: exports SY_CUDNN_LIBRARY (and LD_LIBRARY_PATH) for the cuDNN attention path when
# the loader would not find libcudnn.so.9 itself but PyTorch's wheels bring one (the device machine).
if [ -z "${SY_CUDNN_LIBRARY:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcudnn\.so\.9'; then
  cudnn_dir=$(python3 -c "import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], 'lib'))" 2>/dev/null)
  if [ -n "$cudnn_dir" ] && [ -f "$cudnn_dir/libcudnn.so.9" ]; then
    export SY_CUDNN_LIBRARY="$cudnn_dir/libcudnn.so.9" LD_LIBRARY_PATH="$cudnn_dir:${LD_LIBRARY_PATH:-}"
  fi
fi
echo "cuDNN: ${SY_CUDNN_LIBRARY:-libcudnn.so.9 from the search path, if any}"
