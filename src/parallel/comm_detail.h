// Internal to src/parallel: helpers shared by the communicator backends.
#pragma once

#include <memory>

#include "switchyard/parallel/comm.h"

namespace sy::parallel::detail {

// Throws Unsupported unless dtype can be reduced (f32, i32, i64).
void check_reducible(DType dtype, const char* op);

// Copies the blocks a rank exchanges with itself (the i-th self send into the i-th self receive) and checks
// that their counts pair up; InvalidArgument otherwise. Blocks naming other peers are ignored.
void copy_self_blocks(int self, const std::vector<SendBlock>& sends, const std::vector<RecvBlock>& recvs, DType dtype);

#if SY_HAS_MPI
// The MPI world communicator (MPI initialised on first use, finalised at exit unless a CommError occurred).
std::shared_ptr<Comm> mpi_world(const CommOptions& options);
#endif

}  // namespace sy::parallel::detail
