// Backend-independent parts of Comm: world selection (auto/local/mpi), group splitting from rank lists,
// and the local (one-rank) backend, whose collectives are copies. The MPI backend is in mpi/mpi_comm.cc.
#include "switchyard/parallel/comm.h"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>

#include "comm_detail.h"
#include "switchyard/core/env.h"

namespace sy::parallel {

namespace {

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  int world_rank() const override { return 0; }

  void all_reduce(void*, int64_t count, DType dtype, ReduceOp) override { detail::check_reducible(dtype, "all_reduce"); }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, DType dtype, ReduceOp) override {
    detail::check_reducible(dtype, "reduce_scatter");
    copy(send, recv, recv_count, dtype);
  }
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) override { copy(send, recv, count, dtype); }
  void all_gather_v(const void* send, int64_t send_count, void* recv, const std::vector<int64_t>& recv_counts,
                    DType dtype) override {
    SY_REQUIRE(recv_counts.size() == 1 && recv_counts[0] == send_count, InvalidArgument, "comm",
               "all_gather_v on the local communicator needs recv_counts = {send_count}");
    copy(send, recv, send_count, dtype);
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType dtype) override {
    SY_REQUIRE(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0], InvalidArgument,
               "comm", "all_to_all_v on the local communicator needs one count, equal for send and recv");
    copy(send, recv, send_counts[0], dtype);
  }
  void exchange(const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype) override {
    for (const SendBlock& b : sends) {
      SY_REQUIRE(b.peer == 0, InvalidArgument, "comm", "exchange: send to rank ", b.peer, " on a one-rank communicator");
    }
    for (const RecvBlock& b : recvs) {
      SY_REQUIRE(b.peer == 0, InvalidArgument, "comm", "exchange: receive from rank ", b.peer,
                 " on a one-rank communicator");
    }
    detail::copy_self_blocks(0, sends, recvs, dtype);
  }
  void send(const void* data, int64_t count, DType dtype, int dst, int tag) override {
    SY_REQUIRE(dst == 0, InvalidArgument, "comm", "send to rank ", dst, " on a one-rank communicator");
    const char* p = static_cast<const char*>(data);
    mailbox_.push_back({tag, std::vector<char>(p, p + count * static_cast<int64_t>(dtype_size(dtype)))});
  }
  void recv(void* data, int64_t count, DType dtype, int src, int tag) override {
    SY_REQUIRE(src == 0, InvalidArgument, "comm", "recv from rank ", src, " on a one-rank communicator");
    for (auto it = mailbox_.begin(); it != mailbox_.end(); ++it) {
      if (it->first != tag) continue;
      const size_t bytes = static_cast<size_t>(count) * dtype_size(dtype);
      SY_REQUIRE(it->second.size() == bytes, InvalidArgument, "comm", "recv of ", bytes, " bytes matches a send of ",
                 it->second.size());
      std::memcpy(data, it->second.data(), bytes);
      mailbox_.erase(it);
      return;
    }
    throw make_error<CommError>("comm", "recv with tag ", tag, " on a one-rank communicator has no matching send; ",
                                "it would wait forever");
  }
  void barrier() override {}
  std::unique_ptr<Comm> split(int color, int) override {
    if (color < 0) return nullptr;
    return std::make_unique<LocalComm>();
  }

 private:
  static void copy(const void* src, void* dst, int64_t count, DType dtype) {
    if (src != dst && count > 0) std::memcpy(dst, src, static_cast<size_t>(count) * dtype_size(dtype));
  }
  std::deque<std::pair<int, std::vector<char>>> mailbox_;
};

}  // namespace

namespace detail {
void check_reducible(DType dtype, const char* op) {
  SY_REQUIRE(dtype == DType::kF32 || dtype == DType::kI32 || dtype == DType::kI64, Unsupported, "comm", op,
             " supports f32, i32 and i64 elements, not ", dtype_name(dtype));
}

void copy_self_blocks(int self, const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype) {
  size_t j = 0;
  for (const SendBlock& b : sends) {
    if (b.peer != self || b.count == 0) continue;
    while (j < recvs.size() && (recvs[j].peer != self || recvs[j].count == 0)) ++j;
    SY_REQUIRE(j < recvs.size() && recvs[j].count == b.count, InvalidArgument, "comm",
               "exchange: a block of ", b.count, " elements to self has no receive block of the same size");
    if (b.data != recvs[j].data) std::memcpy(recvs[j].data, b.data, static_cast<size_t>(b.count) * dtype_size(dtype));
    ++j;
  }
  while (j < recvs.size() && (recvs[j].peer != self || recvs[j].count == 0)) ++j;
  SY_REQUIRE(j == recvs.size(), InvalidArgument, "comm", "exchange: more receive blocks from self than send blocks");
}
}  // namespace detail

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

std::unique_ptr<Comm> Comm::split_groups(const std::vector<std::vector<int>>& groups) {
  int color = -1, key = 0;
  std::vector<int> seen(static_cast<size_t>(size()), 0);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].size(); ++i) {
      const int r = groups[g][i];
      SY_REQUIRE(r >= 0 && r < size(), InvalidArgument, "comm", "group ", g, " names rank ", r, " outside 0..",
                 size() - 1);
      SY_REQUIRE(seen[r]++ == 0, InvalidArgument, "comm", "rank ", r, " appears in more than one group");
      if (r == rank()) color = static_cast<int>(g), key = static_cast<int>(i);
    }
  }
  SY_REQUIRE(color >= 0, InvalidArgument, "comm", "the groups do not contain rank ", rank(),
             "; they must partition the communicator");
  return split(color, key);
}

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

bool mpi_available() { return SY_HAS_MPI; }

#if !SY_HAS_NCCL
bool nccl_available() { return false; }
std::unique_ptr<Comm> make_nccl_comm(Comm&, int, const CommOptions&) {
  throw make_error<Unsupported>("comm", "this switchyard was built without NCCL (it needs a CUDA build and NCCL, ",
                                "e.g. the CUDA toolkit's libnccl or Debian's libnccl-dev)");
}
#endif

std::shared_ptr<Comm> world_comm(const std::string& backend, const CommOptions& options) {
  CommOptions opt = options;
  opt.timeout_s = env_double("SY_COMM_TIMEOUT", opt.timeout_s, 0.0, 1e9);
  if (backend == "local") return make_local_comm();
  if (backend == "mpi" || (backend == "auto" && launched_by_mpirun())) {
#if SY_HAS_MPI
    return detail::mpi_world(opt);
#else
    if (backend == "mpi") {
      throw make_error<Unsupported>("comm", "this switchyard was built without MPI; install libopenmpi-dev ",
                                    "openmpi-bin and rebuild (cmake -DSY_MPI=ON)");
    }
    throw make_error<Unsupported>("comm", "started under mpirun, but this switchyard was built without MPI; ",
                                  "install libopenmpi-dev openmpi-bin and rebuild (cmake -DSY_MPI=ON)");
#endif
  }
  SY_REQUIRE(backend == "auto", InvalidArgument, "comm", "unknown communicator backend \"", backend,
             "\" (auto, local or mpi)");
  return make_local_comm();
}

}  // namespace sy::parallel
