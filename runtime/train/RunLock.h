//===- RunLock.h - One writer per run directory -----------------*- C++ -*-===//
//
// A run directory has one writer: momarun train (rank 0 of several) and
// train-aux hold an advisory lock (flock) on RUN/.momarun.lock for the whole
// run, so that a second run into the same --out, or a --resume beside a
// running writer, is refused naming the holder's pid instead of
// interleaving steps and losing metrics. The kernel releases the lock when
// the holder exits, however it dies. The file also records which kind of
// run the directory holds: train-aux refuses a training run's directory
// (and train a router-training one), whose files it would overwrite.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_RUNLOCK_H
#define MOMAC_RUNTIME_TRAIN_RUNLOCK_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace momac {

class RunLock {
public:
  /// Locks `runDirectory` (created if need be) for a run of `kind` ("train",
  /// "train-aux"): an error naming the holder when another process holds
  /// it, or naming the kind when the directory holds another kind of run.
  static llvm::Expected<RunLock> acquire(llvm::StringRef runDirectory,
                                         llvm::StringRef kind);
  RunLock(RunLock &&other) noexcept : fd(other.fd) { other.fd = -1; }
  RunLock &operator=(RunLock &&) = delete;
  RunLock(const RunLock &) = delete;
  ~RunLock();

private:
  explicit RunLock(int fd) : fd(fd) {}
  int fd = -1;
};

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_RUNLOCK_H
