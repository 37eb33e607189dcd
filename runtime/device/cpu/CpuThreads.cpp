//===- CpuThreads.cpp - Thread settings for CPU artifacts -----------------===//

#include "runtime/device/cpu/CpuThreads.h"

#include <cstdlib>

void momac::cpu::configureThreadsBeforeLoad() {
  // The artifact's parallel loops call BLAS from each OpenMP thread: BLAS
  // must not start a second pool on the same cores.
  ::setenv("OPENBLAS_NUM_THREADS", "1", /*overwrite=*/1);
  // A step runs hundreds of short parallel loops back to back; workers that
  // sleep between them (OMP_WAIT_POLICY=passive) pay a wake-up for each.
  // Keep them spinning for 200 ms unless the user chose a block time.
  ::setenv("KMP_BLOCKTIME", "200", /*overwrite=*/0);
}
