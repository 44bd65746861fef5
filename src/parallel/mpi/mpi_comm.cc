// The Open MPI communicator backend. Every collective is issued non-blocking (MPI_I*) and polled with
// MPI_Test until it completes or the deadline passes; then a CommError is thrown (library code never calls
// MPI_Abort or exit: the caller decides, and the CLI exits non-zero, which makes mpirun end the job).
// Errors come back as codes (MPI_ERRORS_RETURN) and are reported with MPI's error string.
// Not here: GPU buffers (NCCL backend), MPI-level fault tolerance (ULFM).
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "../comm_detail.h"
#include "switchyard/core/log.h"

namespace sy::parallel::detail {

namespace {

// Process-wide MPI state: initialised once, finalised at exit unless a collective failed (finalising
// after a lost rank would block in the finalize handshake).
struct MpiRuntime {
  bool initialized_here = false;
  bool broken = false;
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (initialized_here && !finalized && !broken) MPI_Finalize();
  }
};
MpiRuntime& runtime() {
  static MpiRuntime r;
  return r;
}

#define SY_MPI_CALL(call)                                                                            \
  do {                                                                                               \
    int sy_mpi_rc = (call);                                                                          \
    if (sy_mpi_rc != MPI_SUCCESS) fail_call(#call, sy_mpi_rc, __FILE__, __LINE__);                   \
  } while (0)

[[noreturn]] void fail_call(const char* call, int rc, const char* file, int line) {
  runtime().broken = true;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw make_error<CommError>("comm", call, " failed: ", text, " (", file, ":", line,
                              "); a peer rank may have exited; check the other ranks' output");
}

MPI_Datatype mpi_type(DType dt) {
  switch (dt) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kI32: return MPI_INT32_T;
    case DType::kI64: return MPI_INT64_T;
    case DType::kI8: return MPI_INT8_T;
    case DType::kU8: return MPI_UINT8_T;
    case DType::kBF16:
    case DType::kF16: return MPI_UINT16_T;  // moved as raw 16-bit words; never reduced
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

int to_int(int64_t v, const char* what) {
  SY_REQUIRE(v >= 0 && v <= INT_MAX, Unsupported, "comm", what, " of ", v,
             " elements does not fit MPI's int counts; split the transfer");
  return static_cast<int>(v);
}

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, bool owned, const CommOptions& options) : comm_(comm), owned_(owned), options_(options) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    int w = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &w);
    world_rank_ = w;
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized && !runtime().broken) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  int world_rank() const override { return world_rank_; }
  CommOptions options() const override { return options_; }

  void all_reduce(void* data, int64_t count, DType dtype, ReduceOp op) override {
    check_reducible(dtype, "all_reduce");
    MPI_Request req;
    SY_MPI_CALL(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(count, "all_reduce"), mpi_type(dtype), mpi_op(op), comm_, &req));
    wait(req, "all_reduce");
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp op) override {
    check_reducible(dtype, "reduce_scatter");
    MPI_Request req;
    SY_MPI_CALL(MPI_Ireduce_scatter_block(send, recv, to_int(recv_count, "reduce_scatter"), mpi_type(dtype), mpi_op(op),
                                          comm_, &req));
    wait(req, "reduce_scatter");
  }
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override {
    MPI_Request req;
    const int n = to_int(count, "all_gather");
    SY_MPI_CALL(MPI_Iallgather(send, n, mpi_type(dtype), recv, n, mpi_type(dtype), comm_, &req));
    wait(req, "all_gather");
  }
  void all_gather_v(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>& recv_counts,
                    DType dtype) override {
    std::vector<int> counts, displs;
    to_counts(recv_counts, counts, displs, "all_gather_v");
    SY_REQUIRE(counts[rank_] == send_count, InvalidArgument, "comm", "all_gather_v: rank ", rank_, " sends ", send_count,
               " elements but recv_counts says ", counts[rank_]);
    MPI_Request req;
    SY_MPI_CALL(MPI_Iallgatherv(send, to_int(send_count, "all_gather_v"), mpi_type(dtype), recv, counts.data(),
                                displs.data(), mpi_type(dtype), comm_, &req));
    wait(req, "all_gather_v");
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dtype) override {
    std::vector<int> sc, sd, rc, rd;
    to_counts(send_counts, sc, sd, "all_to_all_v send");
    to_counts(recv_counts, rc, rd, "all_to_all_v recv");
    MPI_Request req;
    SY_MPI_CALL(MPI_Ialltoallv(send, sc.data(), sd.data(), mpi_type(dtype), recv, rc.data(), rd.data(), mpi_type(dtype),
                               comm_, &req));
    wait(req, "all_to_all_v");
  }
  void exchange(const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype) override {
    // Receives first, then sends, all non-blocking on a tag of their own; MPI keeps messages between a pair
    // in order, which pairs the i-th send with the i-th receive.
    for (const RecvBlock& b : recvs) check_peer(b.peer, "exchange");  // all checked before anything is posted
    for (const SendBlock& b : sends) check_peer(b.peer, "exchange");
    std::vector<MPI_Request> reqs;
    reqs.reserve(sends.size() + recvs.size());
    for (const RecvBlock& b : recvs) {
      if (b.peer == rank_ || b.count == 0) continue;
      reqs.emplace_back();
      SY_MPI_CALL(MPI_Irecv(b.data, to_int(b.count, "exchange"), mpi_type(dtype), b.peer, kExchangeTag, comm_,
                            &reqs.back()));
    }
    for (const SendBlock& b : sends) {
      if (b.peer == rank_ || b.count == 0) continue;
      reqs.emplace_back();
      SY_MPI_CALL(MPI_Isend(b.data, to_int(b.count, "exchange"), mpi_type(dtype), b.peer, kExchangeTag, comm_,
                            &reqs.back()));
    }
    detail::copy_self_blocks(rank_, sends, recvs, dtype);  // overlaps with the transfers in flight
    wait_all(reqs, "exchange");
  }
  void send(const void* data, int64_t count, DType dtype, int dst, int tag) override {
    check_peer(dst, "send");
    MPI_Request req;
    SY_MPI_CALL(MPI_Isend(data, to_int(count, "send"), mpi_type(dtype), dst, tag, comm_, &req));
    wait(req, "send");
  }
  void recv(void* data, int64_t count, DType dtype, int src, int tag) override {
    check_peer(src, "recv");
    MPI_Request req;
    SY_MPI_CALL(MPI_Irecv(data, to_int(count, "recv"), mpi_type(dtype), src, tag, comm_, &req));
    wait(req, "recv");
  }
  void barrier() override {
    MPI_Request req;
    SY_MPI_CALL(MPI_Ibarrier(comm_, &req));
    wait(req, "barrier");
  }
  std::unique_ptr<Comm> split(int color, int key) override {
    barrier();  // MPI_Comm_split blocks without a deadline: make sure every rank is here first
    MPI_Comm out = MPI_COMM_NULL;
    SY_MPI_CALL(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &out));
    if (out == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiComm>(out, true, options_);
  }

 private:
  void check_peer(int peer, const char* op) const {
    SY_REQUIRE(peer >= 0 && peer < size_, InvalidArgument, "comm", op, ": rank ", peer, " is outside 0..", size_ - 1);
  }
  void to_counts(const std::vector<int64_t>& c, std::vector<int>& counts, std::vector<int>& displs,
                 const char* what) const {
    SY_REQUIRE(static_cast<int>(c.size()) == size_, InvalidArgument, "comm", what, ": ", c.size(),
               " counts for a communicator of ", size_, " ranks");
    counts.resize(size_);
    displs.resize(size_);
    int64_t off = 0;
    for (int r = 0; r < size_; ++r) {
      counts[r] = to_int(c[r], what);
      displs[r] = to_int(off, what);
      off += c[r];
    }
    to_int(off, what);
  }
  void wait(MPI_Request& req, const char* op) {
    std::vector<MPI_Request> one = {req};
    wait_all(one, op);
    req = one[0];
  }
  // Polls the requests until all are done; throws CommError at the deadline.
  void wait_all(std::vector<MPI_Request>& reqs, const char* op) {
    if (reqs.empty()) return;
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    int flag = 0;
    for (int iter = 0;; ++iter) {
      SY_MPI_CALL(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE));
      if (flag) return;
      if (iter < 64) continue;
      const double waited = std::chrono::duration<double>(clock::now() - start).count();
      if (options_.timeout_s > 0 && waited > options_.timeout_s) {
        runtime().broken = true;
        throw make_error<CommError>("comm", op, " timed out after ", options_.timeout_s, " s on rank ", rank_, " of ",
                                    size_, " (world rank ", world_rank_, "): a peer rank exited or stopped ",
                                    "responding; check the other ranks' output (timeout: SY_COMM_TIMEOUT or ",
                                    "--comm-timeout)");
      }
      // Non-blocking collectives progress only inside MPI calls, so poll often: yield the core for the
      // first 50 ms (oversubscribed peers get to run), then sleep briefly between polls.
      if (waited < 0.05) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  static constexpr int kExchangeTag = 0x5e7c;  // reserved for exchange(); send/recv callers use their own tags
  MPI_Comm comm_;
  bool owned_;
  CommOptions options_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
};

}  // namespace

std::shared_ptr<Comm> mpi_world(const CommOptions& options) {
  MpiRuntime& rt = runtime();
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    SY_MPI_CALL(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    rt.initialized_here = true;
  }
  return std::make_shared<MpiComm>(MPI_COMM_WORLD, false, options);
}

}  // namespace sy::parallel::detail
