//===- IndexedDataset.cpp - Megatron-LM indexed datasets ------------------===//
//
// Every count in the .idx is checked against the bytes really present before
// anything is read at the offset it implies, and arithmetic on counts is kept
// below overflow, so any pair of files at all is safe to open. The .idx arrays
// are copied out (they are not aligned in the file: the header is 34 bytes);
// the .bin, usually the large one, stays mapped.
//
//===----------------------------------------------------------------------===//

#include "runtime/data/IndexedDataset.h"

#include "lib/support/AtomicFile.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Signals.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <optional>
#include <unistd.h>

using namespace momac;
namespace endian = llvm::support::endian;

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
/// magic, version, dtype code, sequence count, document count.
constexpr uint64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

bool isKnownCode(uint8_t code) { return code >= 1 && code <= 8; }

bool isIntegerType(IndexedDType dtype) {
  return dtype != IndexedDType::Float64 && dtype != IndexedDType::Float32;
}

/// The ids a dtype can hold, for the builder.
std::pair<int64_t, int64_t> valueRange(IndexedDType dtype) {
  switch (dtype) {
  case IndexedDType::UInt8:
    return {0, 255};
  case IndexedDType::Int8:
    return {-128, 127};
  case IndexedDType::Int16:
    return {-32768, 32767};
  case IndexedDType::UInt16:
    return {0, 65535};
  case IndexedDType::Int32:
    return {std::numeric_limits<int32_t>::min(),
            std::numeric_limits<int32_t>::max()};
  default:
    return {std::numeric_limits<int64_t>::min(),
            std::numeric_limits<int64_t>::max()};
  }
}

/// Flushes `os` (opened on `fd` without ownership) to disk and closes `fd`;
/// the error names `target`. raw_fd_ostream does not fsync, and only an fsync
/// before the rename makes the rename safe against power loss.
llvm::Error syncAndClose(llvm::raw_fd_ostream &os, int fd,
                         llvm::StringRef target) {
  os.flush();
  std::string message;
  if (os.has_error()) {
    message = os.error().message();
    // raw_fd_ostream aborts the process if destroyed with an error set.
    os.clear_error();
  } else if (::fsync(fd) != 0) {
    message = std::strerror(errno);
  }
  if (::close(fd) != 0 && message.empty())
    message = std::strerror(errno);
  if (!message.empty())
    return makeError(target + ": cannot write: " + message);
  return llvm::Error::success();
}

} // namespace

llvm::StringRef momac::indexedDTypeName(IndexedDType dtype) {
  switch (dtype) {
  case IndexedDType::UInt8:
    return "uint8";
  case IndexedDType::Int8:
    return "int8";
  case IndexedDType::Int16:
    return "int16";
  case IndexedDType::Int32:
    return "int32";
  case IndexedDType::Int64:
    return "int64";
  case IndexedDType::Float64:
    return "float64";
  case IndexedDType::Float32:
    return "float32";
  case IndexedDType::UInt16:
    return "uint16";
  }
  return "unknown";
}

uint64_t momac::indexedDTypeSize(IndexedDType dtype) {
  switch (dtype) {
  case IndexedDType::UInt8:
  case IndexedDType::Int8:
    return 1;
  case IndexedDType::Int16:
  case IndexedDType::UInt16:
    return 2;
  case IndexedDType::Int32:
  case IndexedDType::Float32:
    return 4;
  case IndexedDType::Int64:
  case IndexedDType::Float64:
    return 8;
  }
  return 1;
}

IndexedDType momac::bestFittingIndexedDType(int64_t vocabSize) {
  // Megatron's threshold, a little below 65536.
  return vocabSize < 65500 ? IndexedDType::UInt16 : IndexedDType::Int32;
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

// A sparse file can hold counts its size allows and the memory does not: the
// arrays are copied into memory, so they are bounded by it (half of it: the
// training state needs the rest) before anything is allocated.
static std::optional<std::string> exceedsMemory(uint64_t sequenceCount,
                                                uint64_t documentCount) {
  const uint64_t memory = uint64_t(::sysconf(_SC_PHYS_PAGES)) *
                          uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t needed = 16 * sequenceCount + 8 * documentCount;
  if (!memory || needed <= memory / 2)
    return std::nullopt;
  return llvm::formatv("sequence count {0} and document count {1} need {2:F1} "
                       "GB of memory for the index, more than half of this "
                       "machine's {3:F1} GB",
                       sequenceCount, documentCount, double(needed) / 1e9,
                       double(memory) / 1e9)
      .str();
}

llvm::Expected<IndexedDataset> IndexedDataset::open(llvm::StringRef prefix) {
  std::string idxName = (prefix + ".idx").str();
  std::string binName = (prefix + ".bin").str();
  auto idxFail = [&](const llvm::Twine &message) {
    return makeError(idxName + ": " + message);
  };
  auto binFail = [&](const llvm::Twine &message) {
    return makeError(binName + ": " + message);
  };

  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> idxBuffer =
      llvm::MemoryBuffer::getFile(idxName, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!idxBuffer)
    return idxFail("cannot read: " + idxBuffer.getError().message());
  llvm::StringRef idx = (*idxBuffer)->getBuffer();
  const char *base = idx.data();

  if (idx.size() < kHeaderBytes)
    return idxFail(llvm::formatv("file is {0} bytes, too short for the "
                                 "{1}-byte header",
                                 idx.size(), kHeaderBytes));
  if (std::memcmp(base, kMagic, sizeof(kMagic)) != 0) {
    std::string shown;
    llvm::raw_string_ostream os(shown);
    llvm::printEscapedString(idx.take_front(sizeof(kMagic)), os);
    return idxFail("magic is \"" + shown +
                   "\", expected \"MMIDIDX\\00\\00\": not a Megatron indexed "
                   "dataset index");
  }
  uint64_t version = endian::read64le(base + 9);
  if (version != kVersion)
    return idxFail(
        llvm::formatv("version is {0}, only version 1 is supported", version));
  uint8_t code = uint8_t(base[17]);
  if (!isKnownCode(code))
    return idxFail(llvm::formatv("dtype code {0} is unknown (Megatron's codes "
                                 "are 1 to 8)",
                                 unsigned(code)));
  IndexedDType dtype = IndexedDType(code);
  if (!isIntegerType(dtype))
    return idxFail(llvm::formatv("dtype code {0} ({1}) is not an integer type; "
                                 "token ids must be integers",
                                 unsigned(code), indexedDTypeName(dtype)));
  uint64_t sequenceCount = endian::read64le(base + 18);
  uint64_t documentCount = endian::read64le(base + 26);

  // Both counts are bounded by the file size before they are multiplied,
  // so the arithmetic below cannot overflow.
  uint64_t arrayBytes = idx.size() - kHeaderBytes;
  if (sequenceCount > arrayBytes || documentCount > arrayBytes ||
      12 * sequenceCount + 8 * documentCount > arrayBytes)
    return idxFail(llvm::formatv(
        "file is {0} bytes, too short for sequence count {1} and document "
        "count {2} (truncated, or the counts are corrupt)",
        idx.size(), sequenceCount, documentCount));
  uint64_t expectedSize = kHeaderBytes + 12 * sequenceCount + 8 * documentCount;
  // Megatron's multimodal builder appends one mode byte per sequence; the
  // modality of a token comes from its id here, so they are skipped.
  if (idx.size() != expectedSize && idx.size() != expectedSize + sequenceCount)
    return idxFail(llvm::formatv(
        "file is {0} bytes, but sequence count {1} and document count {2} "
        "need {3} bytes (or {4} with sequence modes)",
        idx.size(), sequenceCount, documentCount, expectedSize,
        expectedSize + sequenceCount));
  if (documentCount == 0)
    return idxFail("document count is 0; it must be at least 1 (doc_idx "
                   "starts with 0)");

  if (std::optional<std::string> tooLarge =
          exceedsMemory(sequenceCount, documentCount))
    return idxFail(*tooLarge);

  IndexedDataset dataset;
  dataset.prefixPath = prefix.str();
  dataset.dtypeCode = dtype;
  uint64_t tokenSize = indexedDTypeSize(dtype);

  const char *sizesAt = base + kHeaderBytes;
  const char *pointersAt = sizesAt + 4 * sequenceCount;
  const char *docIndexAt = pointersAt + 8 * sequenceCount;
  dataset.sizes.resize(sequenceCount);
  dataset.pointers.resize(sequenceCount);
  dataset.docIndex.resize(documentCount);
  // Each pointer must be where Megatron's builder puts it: right after the
  // previous sequence. That is stricter than in range and increasing, and it
  // is what catches a .idx paired with the wrong .bin.
  uint64_t expectedPointer = 0;
  for (uint64_t i = 0; i < sequenceCount; ++i) {
    int32_t size = int32_t(endian::read32le(sizesAt + 4 * i));
    if (size < 0)
      return idxFail(llvm::formatv("sizes[{0}] is {1}, expected a "
                                   "non-negative token count",
                                   i, size));
    int64_t pointer = int64_t(endian::read64le(pointersAt + 8 * i));
    if (pointer < 0 || uint64_t(pointer) != expectedPointer)
      return idxFail(
          i == 0
              ? llvm::formatv("pointers[0] is {0}, expected 0", pointer).str()
              : llvm::formatv("pointers[{0}] is {1}, expected {2} "
                              "(pointers[{3}] + sizes[{3}] * {4} bytes: "
                              "sequences are back to back in the .bin)",
                              i, pointer, expectedPointer, i - 1, tokenSize)
                    .str());
    dataset.sizes[i] = size;
    dataset.pointers[i] = pointer;
    // Below 2^63 + 2^34: no overflow, and the next comparison with an int64
    // pointer fails if it passed INT64_MAX.
    expectedPointer += uint64_t(size) * tokenSize;
  }
  for (uint64_t d = 0; d < documentCount; ++d) {
    int64_t entry = int64_t(endian::read64le(docIndexAt + 8 * d));
    if (d == 0 && entry != 0)
      return idxFail(llvm::formatv("doc_idx[0] is {0}, expected 0", entry));
    if (d > 0 && entry < dataset.docIndex[d - 1])
      return idxFail(
          llvm::formatv("doc_idx[{0}] is {1}, less than doc_idx[{2}] "
                        "= {3}",
                        d, entry, d - 1, dataset.docIndex[d - 1]));
    if (entry > int64_t(sequenceCount))
      return idxFail(llvm::formatv("doc_idx[{0}] is {1}, beyond the sequence "
                                   "count {2}",
                                   d, entry, sequenceCount));
    dataset.docIndex[d] = entry;
  }

  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> binBuffer =
      llvm::MemoryBuffer::getFile(binName, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!binBuffer)
    return binFail("cannot read: " + binBuffer.getError().message());
  uint64_t binSize = (*binBuffer)->getBufferSize();
  if (binSize != expectedPointer)
    return binFail(llvm::formatv(
        "file is {0} bytes, but {1} describes {2} bytes ({3} {4} tokens){5}",
        binSize, idxName, expectedPointer, expectedPointer / tokenSize,
        indexedDTypeName(dtype),
        binSize < expectedPointer ? " (truncated?)" : ""));
  dataset.bin = std::move(*binBuffer);
  dataset.totalTokens = expectedPointer / tokenSize;
  return dataset;
}

uint64_t IndexedDataset::sequenceStart(size_t index) const {
  if (index == sizes.size())
    return totalTokens;
  return uint64_t(pointers[index]) / indexedDTypeSize(dtypeCode);
}

size_t IndexedDataset::sequenceOf(uint64_t token) const {
  int64_t byteOffset = int64_t(token * indexedDTypeSize(dtypeCode));
  // The last sequence starting at or before the token; empty sequences share
  // their start with the next one, and upper_bound skips past them.
  auto it = std::upper_bound(pointers.begin(), pointers.end(), byteOffset);
  return it == pointers.begin() ? 0 : size_t(it - pointers.begin()) - 1;
}

void IndexedDataset::readTokens(uint64_t first,
                                llvm::MutableArrayRef<int64_t> out) const {
  assert(first <= totalTokens && out.size() <= totalTokens - first &&
         "token range outside the .bin");
  const char *at = bin->getBufferStart() + first * indexedDTypeSize(dtypeCode);
  switch (dtypeCode) {
  case IndexedDType::UInt8:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = uint8_t(at[i]);
    return;
  case IndexedDType::Int8:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = int8_t(at[i]);
    return;
  case IndexedDType::Int16:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = int16_t(endian::read16le(at + 2 * i));
    return;
  case IndexedDType::UInt16:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = endian::read16le(at + 2 * i);
    return;
  case IndexedDType::Int32:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = int32_t(endian::read32le(at + 4 * i));
    return;
  case IndexedDType::Int64:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = int64_t(endian::read64le(at + 8 * i));
    return;
  case IndexedDType::Float64:
  case IndexedDType::Float32:
    break;
  }
  llvm_unreachable("open() refuses float dtypes");
}

std::vector<int64_t> IndexedDataset::sequence(size_t index) const {
  std::vector<int64_t> tokens(sizes[index]);
  readTokens(sequenceStart(index), tokens);
  return tokens;
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

struct IndexedDatasetBuilder::State {
  std::string prefix;
  IndexedDType dtype;
  /// The .bin being written, beside its final name until finish().
  TempFile binFile;
  std::unique_ptr<llvm::raw_fd_ostream> bin;
  std::vector<int32_t> sizes;
  std::vector<int64_t> docIndex{0};
  std::vector<char> scratch;
  bool done = false;

  std::string binPath() const { return prefix + ".bin"; }
  std::string idxPath() const { return prefix + ".idx"; }

  /// Drops everything written so far.
  void abandon() {
    if (bin) {
      // raw_fd_ostream aborts the process if destroyed with an error set.
      bin->clear_error();
      bin.reset();
    }
    if (!binFile.path.empty())
      discardTemp(binFile);
    done = true;
  }
};

IndexedDatasetBuilder::IndexedDatasetBuilder(std::unique_ptr<State> state)
    : state(std::move(state)) {}
IndexedDatasetBuilder::IndexedDatasetBuilder(
    IndexedDatasetBuilder &&) noexcept = default;
IndexedDatasetBuilder &
IndexedDatasetBuilder::operator=(IndexedDatasetBuilder &&other) noexcept {
  if (this != &other) {
    if (state && !state->done)
      state->abandon();
    state = std::move(other.state);
  }
  return *this;
}

IndexedDatasetBuilder::~IndexedDatasetBuilder() {
  if (state && !state->done)
    state->abandon();
}

llvm::Expected<IndexedDatasetBuilder>
IndexedDatasetBuilder::create(llvm::StringRef prefix, IndexedDType dtype) {
  if (!isKnownCode(uint8_t(dtype)) || !isIntegerType(dtype))
    return makeError(prefix + ".bin: cannot write tokens as " +
                     indexedDTypeName(dtype) + "; token ids must be integers");
  auto state = std::make_unique<State>();
  state->prefix = prefix.str();
  state->dtype = dtype;
  llvm::Expected<TempFile> temp = createTempBeside(state->binPath());
  if (!temp)
    return temp.takeError();
  state->binFile = *temp;
  state->bin = std::make_unique<llvm::raw_fd_ostream>(temp->fd,
                                                      /*shouldClose=*/false);
  return IndexedDatasetBuilder(std::move(state));
}

llvm::Error IndexedDatasetBuilder::addSequence(llvm::ArrayRef<int64_t> tokens) {
  State &s = *state;
  if (s.done)
    return makeError(s.binPath() + ": the dataset was already finished");
  if (tokens.size() > size_t(std::numeric_limits<int32_t>::max()))
    return makeError(llvm::formatv("{0}: sequence {1} has {2} tokens, more "
                                   "than the index can hold (2^31 - 1)",
                                   s.binPath(), s.sizes.size(), tokens.size()));
  auto [lo, hi] = valueRange(s.dtype);
  uint64_t tokenSize = indexedDTypeSize(s.dtype);
  s.scratch.resize(tokens.size() * tokenSize);
  char *at = s.scratch.data();
  for (size_t i = 0; i < tokens.size(); ++i) {
    int64_t token = tokens[i];
    if (token < lo || token > hi)
      return makeError(llvm::formatv("{0}: token {1} (sequence {2}, position "
                                     "{3}) does not fit {4}",
                                     s.binPath(), token, s.sizes.size(), i,
                                     indexedDTypeName(s.dtype)));
    switch (tokenSize) {
    case 1:
      at[i] = char(token);
      break;
    case 2:
      endian::write16le(at + 2 * i, uint16_t(token));
      break;
    case 4:
      endian::write32le(at + 4 * i, uint32_t(token));
      break;
    default:
      endian::write64le(at + 8 * i, uint64_t(token));
      break;
    }
  }
  s.bin->write(s.scratch.data(), s.scratch.size());
  if (s.bin->has_error()) {
    std::string message = s.bin->error().message();
    s.abandon();
    return makeError(s.binPath() + ": cannot write: " + message);
  }
  s.sizes.push_back(int32_t(tokens.size()));
  return llvm::Error::success();
}

void IndexedDatasetBuilder::endDocument() {
  state->docIndex.push_back(int64_t(state->sizes.size()));
}

llvm::Error IndexedDatasetBuilder::addDocument(llvm::ArrayRef<int64_t> tokens) {
  if (llvm::Error error = addSequence(tokens))
    return error;
  endDocument();
  return llvm::Error::success();
}

llvm::Error IndexedDatasetBuilder::finish() {
  State &s = *state;
  if (s.done)
    return makeError(s.binPath() + ": the dataset was already finished");
  if (s.docIndex.back() != int64_t(s.sizes.size()))
    s.docIndex.push_back(int64_t(s.sizes.size()));

  llvm::Error binError = syncAndClose(*s.bin, s.binFile.fd, s.binPath());
  s.binFile.fd = -1;
  if (binError) {
    s.abandon();
    return binError;
  }

  llvm::Expected<TempFile> idxTemp = createTempBeside(s.idxPath());
  if (!idxTemp) {
    s.abandon();
    return idxTemp.takeError();
  }
  {
    llvm::raw_fd_ostream os(idxTemp->fd, /*shouldClose=*/false);
    char word[8];
    os.write(kMagic, sizeof(kMagic));
    endian::write64le(word, kVersion);
    os.write(word, 8);
    os << char(uint8_t(s.dtype));
    endian::write64le(word, s.sizes.size());
    os.write(word, 8);
    endian::write64le(word, s.docIndex.size());
    os.write(word, 8);
    for (int32_t size : s.sizes) {
      endian::write32le(word, uint32_t(size));
      os.write(word, 4);
    }
    uint64_t pointer = 0;
    for (int32_t size : s.sizes) {
      endian::write64le(word, pointer);
      os.write(word, 8);
      pointer += uint64_t(size) * indexedDTypeSize(s.dtype);
    }
    for (int64_t entry : s.docIndex) {
      endian::write64le(word, uint64_t(entry));
      os.write(word, 8);
    }
    if (llvm::Error error = syncAndClose(os, idxTemp->fd, s.idxPath())) {
      idxTemp->fd = -1;
      discardTemp(*idxTemp);
      s.abandon();
      return error;
    }
  }

  // .bin first: a crash between the renames leaves the old .idx with the new
  // .bin, which open() reports (the sizes no longer add up) rather than
  // reading the wrong tokens, in all but contrived cases.
  idxTemp->fd = -1;
  if (std::error_code ec =
          llvm::sys::fs::rename(s.binFile.path, s.binFile.target)) {
    discardTemp(*idxTemp);
    s.abandon();
    return makeError(s.binPath() +
                     ": cannot rename the temporary file into "
                     "place: " +
                     ec.message());
  }
  llvm::sys::DontRemoveFileOnSignal(s.binFile.path);
  s.binFile.path.clear();
  if (std::error_code ec =
          llvm::sys::fs::rename(idxTemp->path, idxTemp->target)) {
    discardTemp(*idxTemp);
    s.abandon();
    return makeError(s.idxPath() +
                     ": cannot rename the temporary file into "
                     "place: " +
                     ec.message());
  }
  llvm::sys::DontRemoveFileOnSignal(idxTemp->path);
  syncParentDirectory(s.idxPath());
  s.bin.reset();
  s.done = true;
  return llvm::Error::success();
}

llvm::Error
momac::writeIndexedDataset(llvm::StringRef prefix,
                           llvm::ArrayRef<std::vector<int64_t>> documents,
                           IndexedDType dtype) {
  llvm::Expected<IndexedDatasetBuilder> builder =
      IndexedDatasetBuilder::create(prefix, dtype);
  if (!builder)
    return builder.takeError();
  for (const std::vector<int64_t> &document : documents)
    if (llvm::Error error = builder->addDocument(document))
      return error;
  return builder->finish();
}
