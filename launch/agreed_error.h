// What: AgreedError, an error that every rank raises together after a collective check or
// agreement (a run.dir in use, a checkpoint write that failed on some rank).
// Why: main() logs it once (rank 0) and every rank exits 1 through MPI_Finalize, without
// MPI_Abort, so the job ends cleanly: no "MPI_ABORT was invoked" and no SIGTERM to ranks that
// would then announce a checkpoint. Raise it only where every rank of the world raises it.
#pragma once

#include "core/error.h"

namespace mt::launch {

class AgreedError : public core::Error {
 public:
  explicit AgreedError(const core::Error& e) : core::Error(e) {}
};

}  // namespace mt::launch
