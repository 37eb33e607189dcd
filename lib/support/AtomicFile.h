//===- AtomicFile.h - Replace a file atomically, and only a file -*- C++ -*-===//
//
// Every file momac and momarun write (checkpoints, weights, gradients,
// datasets) is written to a fresh temporary beside its final name and
// renamed over it, so that a crash never leaves a half-written file under
// that name. This is the one place that knows how:
//
//  - Only regular files are replaced. An existing device, FIFO, socket or
//    directory at the final name is an error (the rename would otherwise
//    replace /dev/null with a regular file). A symlink is written through:
//    its target is replaced, atomically, and the link stays.
//  - The temporary is `NAME.tmp-<random>`, created exclusively, and removed
//    if the process is interrupted (SIGINT, SIGTERM, ...) before the rename,
//    through LLVM's RemoveFileOnSignal. A kill -9 can still leave one
//    behind; removeStaleTemporaries() clears those of a previous run.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SUPPORT_ATOMICFILE_H
#define MOMAC_LIB_SUPPORT_ATOMICFILE_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace momac {

/// A temporary file beside the file it will replace.
struct TempFile {
  int fd = -1;
  std::string path;
  /// The name the temporary becomes (a symlink's target, resolved).
  std::string target;
};

/// Checks that `target` is absent or a regular file (or a symlink to one),
/// then creates the temporary beside it. Errors name `target`.
llvm::Expected<TempFile> createTempBeside(llvm::StringRef target);

/// fsyncs and closes the temporary, renames it over its target and syncs
/// the directory. On error the temporary is removed.
llvm::Error commitTemp(TempFile &temp);

/// Closes and removes the temporary (a write that failed).
void discardTemp(TempFile &temp);

/// Refuses to write `output` when it is one of `inputs`: the same file by
/// device and inode, through whatever path or link. Writing over it would
/// destroy an input the command still needs (or reads as it writes). An
/// error names both; `output` not existing yet is no input.
llvm::Error refuseInputAsOutput(llvm::StringRef output,
                                llvm::ArrayRef<std::string> inputs);

/// Replaces `path` with `contents` atomically (createTempBeside, write,
/// commitTemp): readers see the old file or the whole new one.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents);

/// fsyncs the directory of `path`, which persists a rename into it. A
/// filesystem that cannot fsync a directory still has complete files, so a
/// failure is ignored.
void syncParentDirectory(llvm::StringRef path);

/// Removes `NAME.tmp-*` files beside `target` that an interrupted writer
/// left behind; returns how many it removed.
unsigned removeStaleTemporaries(llvm::StringRef target);

} // namespace momac

#endif // MOMAC_LIB_SUPPORT_ATOMICFILE_H
