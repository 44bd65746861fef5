// Comm: a communicator over a group of ranks (collectives, point-to-point, sub-groups), with backends
// `local` (one rank, always built), `mpi` (Open MPI, built when MPI is found) and `nccl` (GPU buffers, built
// in CUDA builds that find NCCL). It is not a transport of its own: every byte moves through the backend
// library. Buffers are host memory for local and mpi, device memory for nccl; counts are elements of `dtype`. Every blocking call waits at most CommOptions::timeout_s and then throws sy::CommError naming
// the operation, so a rank that died or hangs is reported instead of hanging the others forever.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/core/dtype.h"
#include "switchyard/core/error.h"

namespace sy {
// A collective or point-to-point call that failed or timed out. The communicator is unusable afterwards.
class CommError : public Error { public: using Error::Error; };
}  // namespace sy

namespace sy::parallel {

enum class ReduceOp { kSum, kMax, kMin };

// One message of a block exchange (Comm::exchange): `count` elements to or from `peer`.
struct SendBlock {
  int peer = 0;
  const void* data = nullptr;
  int64_t count = 0;
};
struct RecvBlock {
  int peer = 0;
  void* data = nullptr;
  int64_t count = 0;
};

struct CommOptions {
  double timeout_s = 300.0;  // per blocking call; <= 0 waits forever
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  // Rank of this process in the world communicator this one was split from.
  virtual int world_rank() const = 0;
  // True when buffers are GPU device pointers (the nccl backend), false for host memory (local, mpi).
  virtual bool device_memory() const { return false; }
  // The options it was made with (communicators built from this one, e.g. NCCL over MPI, reuse them).
  virtual CommOptions options() const { return {}; }

  // data: (count,) in and out; element-wise op over ranks. dtype f32, i32 or i64 (sum/max/min).
  virtual void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op) = 0;
  // send: (size * recv_count,); recv: (recv_count,) = op over ranks of send[rank * recv_count + i].
  virtual void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) = 0;
  // send: (count,); recv: (size * count,) with recv[r * count + i] = rank r's send[i].
  virtual void all_gather(const void* send, void* recv, int64_t count, DType dtype) = 0;
  // Variable sizes: recv_counts[r] elements from rank r, stored rank after rank (displacements = prefix sums).
  virtual void all_gather_v(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>& recv_counts,
                            DType dtype) = 0;
  // send holds send_counts[r] elements for rank r, rank after rank; recv receives recv_counts[r] from rank r,
  // rank after rank. Both count vectors have size() entries and must agree pairwise across ranks.
  virtual void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts, DType dtype) = 0;
  // Sparse all-to-all in blocks, each straight from and into the caller's memory (no staging buffer): for
  // every ordered pair of ranks, the i-th send block of one to the other matches the other's i-th receive
  // block from it, and their counts must agree. Blocks to self are copied. Ranks that exchange anything
  // must call it concurrently; it is not a barrier. Blocks with count 0 are skipped (on both sides).
  virtual void exchange(const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype) = 0;
  virtual void send(const void* data, int64_t count, DType dtype, int dst, int tag) = 0;
  virtual void recv(void* data, int64_t count, DType dtype, int src, int tag) = 0;
  virtual void barrier() = 0;
  // Collective over this communicator: ranks with the same color form a new group, ordered by key (ties by
  // rank). Every rank must call it; a rank passing color < 0 gets nullptr.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // Conveniences over the virtual calls.
  template <typename T>
  void all_reduce(std::vector<T>& data, ReduceOp op = ReduceOp::kSum) {
    all_reduce(data.data(), static_cast<int64_t>(data.size()), dtype_of<T>(), op);
  }
  template <typename T>
  std::vector<T> all_gather(const std::vector<T>& mine) {  // equal sizes on every rank
    std::vector<T> out(mine.size() * static_cast<size_t>(size()));
    all_gather(mine.data(), out.data(), static_cast<int64_t>(mine.size()), dtype_of<T>());
    return out;
  }
  // The group among `ranks` (ranks of this communicator, in group order) that contains this rank; every
  // rank of this communicator passes the full list of groups, which must partition it.
  std::unique_ptr<Comm> split_groups(const std::vector<std::vector<int>>& groups);

  template <typename T>
  static DType dtype_of();
};

template <> inline DType Comm::dtype_of<float>() { return DType::kF32; }
template <> inline DType Comm::dtype_of<int32_t>() { return DType::kI32; }
template <> inline DType Comm::dtype_of<int64_t>() { return DType::kI64; }
template <> inline DType Comm::dtype_of<int8_t>() { return DType::kI8; }
template <> inline DType Comm::dtype_of<uint8_t>() { return DType::kU8; }

// A one-rank communicator: every collective is a copy.
std::unique_ptr<Comm> make_local_comm();

// The world communicator of this process. backend: "auto" (mpi when built with MPI and launched by mpirun,
// else local), "local" or "mpi". The MPI world is initialised once per process and finalised at exit,
// unless a CommError was raised (finalising after a lost rank would hang). Throws Unsupported when "mpi"
// is asked of a build without MPI.
std::shared_ptr<Comm> world_comm(const std::string& backend = "auto", const CommOptions& options = {});

// True when this build has the MPI backend.
bool mpi_available();

// An NCCL communicator over the same ranks as `bootstrap` (a host communicator: mpi, or local for one rank),
// which carries NCCL's unique id; this rank uses GPU `device`. Its buffers are device memory; tags of
// send/recv are ignored (pairs match in call order). NCCL refuses two ranks on one GPU. Throws Unsupported in
// builds without NCCL or without a visible GPU, CommError when initialisation fails or times out.
std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, int device, const CommOptions& options = {});
// True when this build has the NCCL backend (CUDA builds that found NCCL).
bool nccl_available();
// True when the process was started by mpirun/mpiexec (Open MPI or PMI environment variables).
bool launched_by_mpirun();

}  // namespace sy::parallel
