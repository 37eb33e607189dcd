//===- RunLock.cpp - One writer per run directory -------------------------===//

#include "runtime/train/RunLock.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

using namespace momac;

namespace {

llvm::Error lockError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

/// The lock file's record: "<kind> pid <pid>", the last writer's.
std::string readRecord(int fd) {
  char text[256] = {0};
  ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  std::string record(text, n > 0 ? size_t(n) : 0);
  while (!record.empty() && (record.back() == '\n' || record.back() == ' '))
    record.pop_back();
  return record;
}

} // namespace

llvm::Expected<RunLock> RunLock::acquire(llvm::StringRef runDirectory,
                                         llvm::StringRef kind) {
  if (std::error_code ec = llvm::sys::fs::create_directories(runDirectory))
    return lockError(runDirectory + ": " + ec.message());
  llvm::SmallString<256> path(runDirectory);
  llvm::sys::path::append(path, ".momarun.lock");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return lockError(path + ": " + std::strerror(errno));
  RunLock lock(fd);
  std::string record = readRecord(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK)
      return lockError(path + ": cannot lock: " + std::strerror(errno));
    return lockError(llvm::formatv(
        "{0} is in use by another momarun ({1}): one run writes a directory "
        "at a time; wait for it to finish, or choose another --out",
        runDirectory, record.empty() ? "pid unknown" : record));
  }
  llvm::StringRef held = llvm::StringRef(record).split(' ').first;
  // A training run's directory from before the lock existed: its run.json.
  llvm::SmallString<256> runRecord(runDirectory);
  llvm::sys::path::append(runRecord, "run.json");
  if (held.empty() && llvm::sys::fs::exists(runRecord))
    held = "train";
  if (!held.empty() && held != kind)
    return lockError(llvm::formatv(
        "{0} holds a run of momarun {1}, whose files momarun {2} would "
        "overwrite; choose another --out",
        runDirectory, held, kind));
  std::string mine =
      llvm::formatv("{0} pid {1}\n", kind, int64_t(::getpid())).str();
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, mine.data(), mine.size(), 0) != ssize_t(mine.size()))
    return lockError(path + ": cannot write: " + std::strerror(errno));
  return std::move(lock);
}

RunLock::~RunLock() {
  if (fd >= 0)
    ::close(fd); // releases the lock
}
