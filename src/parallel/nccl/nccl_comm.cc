// The NCCL communicator backend: GPU buffers, one GPU per rank. The NCCL communicator is created in
// non-blocking mode from a unique id that a bootstrap communicator (MPI, or the local one for a single rank)
// carries; every call is issued on the backend's own CUDA stream and then polled until the stream is done,
// the communicator reports an error, or the deadline passes, in which case the NCCL communicator is aborted
// and a CommError thrown (no eternal hang when a peer dies). The stream is the engine's (sy::cuda::stream()),
// so collectives are ordered after the kernels that produced their inputs. Variable-size collectives and the
// block exchange are grouped ncclSend/ncclRecv. Not here: tags (NCCL has none; point-to-point pairs in call
// order), several GPUs per process (the engine uses one device per process).
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "../comm_detail.h"
#include "switchyard/kernels/cuda_memory.h"

namespace sy::parallel {

namespace {

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::kF32: return ncclFloat32;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kI8: return ncclInt8;
    case DType::kU8: return ncclUint8;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

class NcclComm final : public Comm {
 public:
  NcclComm(ncclComm_t comm, int device, cudaStream_t stream, int world_rank, const CommOptions& o)
      : comm_(comm), device_(device), stream_(stream), world_rank_(world_rank), options_(o) {
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
  }
  ~NcclComm() override {
    cudaSetDevice(device_);
    if (!broken_) {
      cudaStreamSynchronize(stream_);
      ncclCommDestroy(comm_);
    } else if (!comm_aborted_) {
      ncclCommAbort(comm_);
    }
    if (scratch_) cudaFree(scratch_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  int world_rank() const override { return world_rank_; }
  bool device_memory() const override { return true; }
  CommOptions options() const override { return options_; }

  void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op) override {
    detail::check_reducible(dtype, "all_reduce");
    issue("all_reduce", [&] { return ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), comm_, stream_); });
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) override {
    detail::check_reducible(dtype, "reduce_scatter");
    issue("reduce_scatter", [&] {
      return ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op), comm_, stream_);
    });
  }
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override {
    issue("all_gather", [&] { return ncclAllGather(send, recv, count, nccl_type(dtype), comm_, stream_); });
  }
  void all_gather_v(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>& recv_counts,
                    DType dtype) override {
    check_counts(recv_counts, "all_gather_v");
    SY_REQUIRE(recv_counts[rank_] == send_count, InvalidArgument, "comm", "all_gather_v: rank ", rank_, " sends ",
               send_count, " elements but recv_counts says ", recv_counts[rank_]);
    std::vector<SendBlock> sends;
    std::vector<RecvBlock> recvs;
    int64_t off = 0;
    for (int r = 0; r < size_; ++r) {
      sends.push_back({r, send, send_count});
      recvs.push_back({r, offset(recv, off, dtype), recv_counts[r]});
      off += recv_counts[r];
    }
    exchange_impl(sends, recvs, dtype, "all_gather_v");
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dtype) override {
    check_counts(send_counts, "all_to_all_v send");
    check_counts(recv_counts, "all_to_all_v recv");
    std::vector<SendBlock> sends;
    std::vector<RecvBlock> recvs;
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sends.push_back({r, offset(const_cast<void*>(send), so, dtype), send_counts[r]});
      recvs.push_back({r, offset(recv, ro, dtype), recv_counts[r]});
      so += send_counts[r];
      ro += recv_counts[r];
    }
    exchange_impl(sends, recvs, dtype, "all_to_all_v");
  }
  void exchange(const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype) override {
    exchange_impl(sends, recvs, dtype, "exchange");
  }
  void send(const void* data, int64_t count, DType dtype, int dst, int) override {
    check_peer(dst, "send");
    issue("send", [&] { return ncclSend(data, count, nccl_type(dtype), dst, comm_, stream_); });
  }
  void recv(void* data, int64_t count, DType dtype, int src, int) override {
    check_peer(src, "recv");
    issue("recv", [&] { return ncclRecv(data, count, nccl_type(dtype), src, comm_, stream_); });
  }
  void barrier() override {
    if (!scratch_) check_cuda(cudaMalloc(&scratch_, sizeof(int32_t)), "barrier");
    all_reduce(scratch_, 1, DType::kI32, ReduceOp::kSum);
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t out = nullptr;
    select_device();
    const ncclResult_t rc = ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &out, &config);
    if (rc != ncclSuccess && rc != ncclInProgress) fail("split", rc);
    if (out != nullptr) wait_ready(out, "split");
    else wait_ready(comm_, "split");
    if (color < 0 || out == nullptr) return nullptr;
    return std::make_unique<NcclComm>(out, device_, stream_, world_rank_, options_);
  }

 private:
  static void* offset(void* base, int64_t elements, DType dtype) {
    return static_cast<char*>(base) + elements * static_cast<int64_t>(dtype_size(dtype));
  }
  void select_device() { check_cuda(cudaSetDevice(device_), "cudaSetDevice"); }
  void check_peer(int peer, const char* op) const {
    SY_REQUIRE(peer >= 0 && peer < size_, InvalidArgument, "comm", op, ": rank ", peer, " is outside 0..", size_ - 1);
  }
  void check_counts(const std::vector<int64_t>& c, const char* what) const {
    SY_REQUIRE(static_cast<int>(c.size()) == size_, InvalidArgument, "comm", what, ": ", c.size(),
               " counts for a communicator of ", size_, " ranks");
    for (int64_t v : c) SY_REQUIRE(v >= 0, InvalidArgument, "comm", what, ": negative count ", v);
  }
  void check_cuda(cudaError_t e, const char* op) {
    if (e == cudaSuccess) return;
    broken_ = true;
    throw make_error<CommError>("comm", op, ": CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
  [[noreturn]] void fail(const char* op, ncclResult_t rc) {
    broken_ = true;
    const char* last = ncclGetLastError(comm_);
    throw make_error<CommError>("comm", op, " failed on rank ", rank_, " of ", size_, ": ", ncclGetErrorString(rc),
                                last && *last ? std::string(" (") + last + ")" : std::string(),
                                "; a peer rank may have exited; check the other ranks' output");
  }

  // Grouped sends and receives (self blocks included: NCCL moves them on the device).
  void exchange_impl(const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype,
                     const char* op) {
    for (const SendBlock& b : sends) check_peer(b.peer, op);
    for (const RecvBlock& b : recvs) check_peer(b.peer, op);
    issue(op, [&] {
      ncclResult_t rc = ncclGroupStart();
      for (const RecvBlock& b : recvs) {
        if (rc != ncclSuccess) break;
        if (b.count > 0) rc = ncclRecv(b.data, b.count, nccl_type(dtype), b.peer, comm_, stream_);
      }
      for (const SendBlock& b : sends) {
        if (rc != ncclSuccess && rc != ncclInProgress) break;
        if (b.count > 0) rc = ncclSend(b.data, b.count, nccl_type(dtype), b.peer, comm_, stream_);
      }
      const ncclResult_t end = ncclGroupEnd();
      return rc != ncclSuccess && rc != ncclInProgress ? rc : end;
    });
  }

  // Runs one NCCL call (or group) and waits for it: first until the non-blocking communicator has queued it,
  // then until the stream has run it, both under the deadline.
  template <typename Call>
  void issue(const char* op, Call&& call) {
    SY_REQUIRE(!broken_, CommError, "comm", op, ": the NCCL communicator failed earlier and is unusable");
    select_device();
    const ncclResult_t rc = call();
    if (rc != ncclSuccess && rc != ncclInProgress) fail(op, rc);
    wait_ready(comm_, op);
    const auto start = std::chrono::steady_clock::now();
    for (int iter = 0;; ++iter) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) check_cuda(e, op);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) fail(op, async);
      check_deadline(start, op);
      if (iter > 64) std::this_thread::yield();
    }
  }
  void wait_ready(ncclComm_t comm, const char* op) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm, &state);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail(op, state);
      check_deadline(start, op);
      std::this_thread::yield();
    }
  }
  void check_deadline(std::chrono::steady_clock::time_point start, const char* op) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options_.timeout_s <= 0 || waited <= options_.timeout_s) return;
    broken_ = true;
    ncclCommAbort(comm_);  // unblocks the kernels waiting for the lost peer
    comm_aborted_ = true;
    throw make_error<CommError>("comm", op, " timed out after ", options_.timeout_s, " s on rank ", rank_, " of ",
                                size_, " (world rank ", world_rank_, "): a peer rank exited or stopped responding; ",
                                "check the other ranks' output (timeout: SY_COMM_TIMEOUT or --comm-timeout)");
  }

  ncclComm_t comm_;
  int device_;
  cudaStream_t stream_;  // the engine's stream: NCCL work is ordered after the kernels that made its inputs
  int world_rank_;
  CommOptions options_;
  int rank_ = 0, size_ = 1;
  bool broken_ = false, comm_aborted_ = false;
  void* scratch_ = nullptr;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, int device, const CommOptions& options) {
  SY_REQUIRE(!bootstrap.device_memory(), InvalidArgument, "comm", "the NCCL bootstrap must be a host communicator");
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    throw make_error<Unsupported>("comm", "the NCCL backend needs a CUDA GPU; none is visible to rank ",
                                  bootstrap.rank());
  }
  SY_REQUIRE(device >= 0 && device < devices, InvalidArgument, "comm", "GPU ", device, " does not exist (", devices,
             " visible)");
  if (cudaSetDevice(device) != cudaSuccess) {
    throw make_error<CommError>("comm", "cudaSetDevice(", device, ") failed on rank ", bootstrap.rank());
  }
  // Rank 0 makes the id; everyone takes rank 0's from an all-gather of the bootstrap group.
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (bootstrap.rank() == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    SY_REQUIRE(rc == ncclSuccess, CommError, "comm", "ncclGetUniqueId failed: ", ncclGetErrorString(rc));
  }
  std::vector<uint8_t> mine(sizeof(id));
  std::memcpy(mine.data(), &id, sizeof(id));
  std::vector<uint8_t> all = bootstrap.all_gather(mine);
  std::memcpy(&id, all.data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t rc = ncclCommInitRankConfig(&comm, bootstrap.size(), id, bootstrap.rank(), &config);
  const auto start = std::chrono::steady_clock::now();
  while (rc == ncclInProgress) {
    ncclCommGetAsyncError(comm, &rc);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rc == ncclInProgress && options.timeout_s > 0 && waited > options.timeout_s) {
      ncclCommAbort(comm);
      throw make_error<CommError>("comm", "NCCL initialisation timed out after ", options.timeout_s, " s on rank ",
                                  bootstrap.rank(), "; a peer rank did not join");
    }
    std::this_thread::yield();
  }
  if (rc != ncclSuccess) {
    if (comm) ncclCommAbort(comm);
    throw make_error<CommError>("comm", "ncclCommInitRankConfig failed on rank ", bootstrap.rank(), " of ",
                                bootstrap.size(), ": ", ncclGetErrorString(rc),
                                " (two ranks on one GPU are refused by NCCL: give each rank its own GPU)");
  }
  return std::make_unique<NcclComm>(comm, device, cuda::stream(), bootstrap.world_rank(), options);
}

}  // namespace sy::parallel
