//===- AtomicFile.cpp - Replace a file atomically, and only a file --------===//

#include "lib/support/AtomicFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Signals.h"
#include "llvm/Support/raw_ostream.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace momac;

namespace {

llvm::Error fileError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

const char *kindName(llvm::sys::fs::file_type type) {
  using llvm::sys::fs::file_type;
  switch (type) {
  case file_type::directory_file:
    return "a directory";
  case file_type::block_file:
  case file_type::character_file:
    return "a device";
  case file_type::fifo_file:
    return "a FIFO";
  case file_type::socket_file:
    return "a socket";
  default:
    return "not a regular file";
  }
}

} // namespace

llvm::Expected<TempFile> momac::createTempBeside(llvm::StringRef target) {
  TempFile temp;
  temp.target = target.str();
  // Through a symlink to what it names; status() follows links.
  llvm::sys::fs::file_status status;
  if (!llvm::sys::fs::status(target, status, /*follow=*/true)) {
    if (status.type() != llvm::sys::fs::file_type::regular_file)
      return fileError(target + ": exists and is " + kindName(status.type()) +
                       "; only regular files are written");
    llvm::SmallString<256> real;
    if (!llvm::sys::fs::real_path(target, real))
      temp.target = std::string(real.str());
  }
  std::error_code ec;
  for (int attempt = 0; attempt < 16; ++attempt) {
    temp.path = (llvm::Twine(temp.target) + ".tmp-" +
                 llvm::utohexstr(llvm::sys::Process::GetRandomNumber()) +
                 llvm::utohexstr(llvm::sys::Process::GetRandomNumber()))
                    .str();
    ec = llvm::sys::fs::openFileForWrite(temp.path, temp.fd,
                                         llvm::sys::fs::CD_CreateNew);
    if (!ec) {
      llvm::sys::RemoveFileOnSignal(temp.path);
      return temp;
    }
    if (ec != std::errc::file_exists)
      break;
  }
  return fileError(target + ": cannot create a temporary file beside it: " +
                   ec.message());
}

void momac::discardTemp(TempFile &temp) {
  if (temp.fd >= 0)
    ::close(temp.fd);
  temp.fd = -1;
  llvm::sys::fs::remove(temp.path);
  llvm::sys::DontRemoveFileOnSignal(temp.path);
}

llvm::Error momac::commitTemp(TempFile &temp) {
  // Without fsync the rename can reach the disk before the data does, and a
  // power loss would leave an empty or partial file under the final name.
  if (::fsync(temp.fd) != 0) {
    std::string message = std::strerror(errno);
    discardTemp(temp);
    return fileError(temp.target + ": cannot flush to disk: " + message);
  }
  if (::close(temp.fd) != 0) {
    temp.fd = -1;
    std::string message = std::strerror(errno);
    discardTemp(temp);
    return fileError(temp.target + ": cannot close: " + message);
  }
  temp.fd = -1;
  if (std::error_code ec = llvm::sys::fs::rename(temp.path, temp.target)) {
    discardTemp(temp);
    return fileError(temp.target +
                     ": cannot rename the temporary file into place: " +
                     ec.message());
  }
  llvm::sys::DontRemoveFileOnSignal(temp.path);
  syncParentDirectory(temp.target);
  return llvm::Error::success();
}

llvm::Error momac::refuseInputAsOutput(llvm::StringRef output,
                                       llvm::ArrayRef<std::string> inputs) {
  llvm::sys::fs::UniqueID written;
  if (llvm::sys::fs::getUniqueID(output, written))
    return llvm::Error::success(); // not there yet
  for (const std::string &input : inputs) {
    llvm::sys::fs::UniqueID read;
    if (!input.empty() && !llvm::sys::fs::getUniqueID(input, read) &&
        read == written)
      return fileError(output + ": is also an input of this command (" +
                       input + "); writing it would destroy that input: "
                               "write to another file");
  }
  return llvm::Error::success();
}

llvm::Error momac::writeFileAtomically(llvm::StringRef path,
                                       llvm::StringRef contents) {
  llvm::Expected<TempFile> temp = createTempBeside(path);
  if (!temp)
    return temp.takeError();
  {
    llvm::raw_fd_ostream out(temp->fd, /*shouldClose=*/false);
    out << contents;
    out.flush();
    if (out.has_error()) {
      std::string message = out.error().message();
      out.clear_error();
      discardTemp(*temp);
      return fileError(path + ": " + message);
    }
  }
  return commitTemp(*temp);
}

void momac::syncParentDirectory(llvm::StringRef path) {
  llvm::StringRef directory = llvm::sys::path::parent_path(path);
  std::string directoryPath = directory.empty() ? "." : directory.str();
  int fd = ::open(directoryPath.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

unsigned momac::removeStaleTemporaries(llvm::StringRef target) {
  llvm::StringRef directory = llvm::sys::path::parent_path(target);
  std::string prefix = (llvm::sys::path::filename(target) + ".tmp-").str();
  std::error_code ec;
  unsigned removed = 0;
  for (llvm::sys::fs::directory_iterator it(directory.empty() ? "." : directory,
                                            ec),
       end;
       !ec && it != end; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with(prefix) &&
        it->type() == llvm::sys::fs::file_type::regular_file &&
        !llvm::sys::fs::remove(it->path()))
      ++removed;
  }
  return removed;
}
