//===- Safetensors.h - Reading and writing safetensors files ----*- C++ -*-===//
//
// The safetensors format (https://github.com/huggingface/safetensors), which
// momac uses for checkpoints, weights and gradients (MODEL_SPEC section 8):
//
//   u64 little-endian N | N bytes of JSON header | data section
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]}, offsets relative to the start of the data section, plus an
// optional "__metadata__" object of string values. The reader accepts exactly
// the files the reference implementation accepts (the tensors must tile the
// data section with no gap, overlap or trailing byte) and reports everything
// else as an llvm::Error that names the file and what is wrong; no input can
// make it assert or read out of bounds. The writer lays files out as the
// reference does, so its output loads anywhere.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SAFETENSORS_SAFETENSORS_H
#define MOMAC_LIB_SAFETENSORS_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace momac {

/// The element types of the format, in the reference implementation's order,
/// which the writer uses to sort tensors (widest first keeps every tensor
/// aligned to its element size).
enum class DType {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

/// The header spelling ("F32", "BF16", ...).
llvm::StringRef dtypeName(DType dtype);
/// The inverse of dtypeName; std::nullopt for any other string.
std::optional<DType> parseDType(llvm::StringRef name);
/// Bytes per element.
uint64_t dtypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  /// Byte range [begin, end) relative to the start of the data section.
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t numElements() const;
  uint64_t numBytes() const { return end - begin; }
};

/// Renders a shape as "[2, 3]" (scalars: "[]"), as the error messages do.
std::string formatShape(llvm::ArrayRef<int64_t> shape);

/// A validated, read-only safetensors file. The bytes stay memory-mapped for
/// the lifetime of the object, so data() costs nothing.
class SafetensorsFile {
public:
  /// Maps and validates `path`. Errors start with "<path>: ".
  static llvm::Expected<SafetensorsFile> open(llvm::StringRef path);
  /// Validates a file already in memory; errors start with the buffer's
  /// identifier.
  static llvm::Expected<SafetensorsFile>
  fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer);

  /// The file name (or buffer identifier) used in messages.
  llvm::StringRef path() const { return buffer->getBufferIdentifier(); }

  /// The tensors in header order (for files written by the reference or by
  /// SafetensorsWriter, this is also the order of their data).
  llvm::ArrayRef<TensorInfo> tensors() const { return tensorList; }
  std::vector<llvm::StringRef> names() const;
  /// The tensor called `name`, or nullptr.
  const TensorInfo *find(llvm::StringRef name) const;

  /// The raw little-endian bytes of a tensor of this file. The memory may
  /// not be aligned to the element size; copy out with memcpy.
  llvm::ArrayRef<char> data(const TensorInfo &tensor) const;

  /// The tensor `name` converted to float, from F32, F16, BF16 or F64.
  /// Errors name the file and the tensor when it is missing or of another
  /// dtype.
  llvm::Expected<std::vector<float>> readFloats(llvm::StringRef name) const;

  /// The "__metadata__" entries (empty when the header has none).
  const std::map<std::string, std::string> &metadata() const {
    return metadataMap;
  }
  /// One metadata value, or std::nullopt.
  std::optional<llvm::StringRef> getMetadata(llvm::StringRef key) const;

  /// True when the file carries per-tensor checksums (kChecksumsKey).
  bool hasChecksums() const { return !checksums.empty(); }
  /// Checks `tensor`'s data against its checksum: an error naming the file
  /// and the tensor when they differ (a corrupted or edited file), or when
  /// a checksummed file has none for it. Success for a file without
  /// checksums. readFloats checks this first.
  llvm::Error verifyChecksum(const TensorInfo &tensor) const;

private:
  SafetensorsFile() = default;
  llvm::Error parseChecksums(llvm::StringRef text);

  std::unique_ptr<llvm::MemoryBuffer> buffer;
  /// Offset of the data section in `buffer` (8 + header size).
  uint64_t dataStart = 0;
  std::vector<TensorInfo> tensorList;
  llvm::StringMap<unsigned> indexByName;
  std::map<std::string, std::string> metadataMap;
  /// Each tensor's XXH3-64, from kChecksumsKey.
  llvm::StringMap<uint64_t> checksums;
};

/// The metadata entry with each tensor's checksum (XXH3-64 of its bytes, as
/// 16 hex digits), a JSON object by tensor name. momarun's checkpoints carry
/// it (SafetensorsWriter::setChecksums), and readers verify it.
constexpr llvm::StringLiteral kChecksumsKey = "xxh3";

/// Collects tensors and metadata, then writes them as one safetensors file.
/// Tensors are laid out as the reference implementation does: sorted by
/// dtype, widest first, then by name; the header is padded with spaces to a
/// multiple of 8 bytes.
class SafetensorsWriter {
public:
  /// Adds a tensor, copying `bytes` (little-endian elements). Fails if the
  /// name is taken or reserved, a dimension is negative, or the byte count
  /// is not product(shape) * dtypeSize(dtype).
  llvm::Error add(llvm::StringRef name, DType dtype,
                  llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<char> bytes);
  /// An F32 tensor.
  llvm::Error add(llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
                  llvm::ArrayRef<float> values);
  /// Like add, but without copying: `bytes` must stay valid until write()
  /// returns. Checkpoints use this to avoid holding the model twice.
  llvm::Error addBorrowed(llvm::StringRef name, DType dtype,
                          llvm::ArrayRef<int64_t> shape,
                          llvm::ArrayRef<char> bytes);

  /// Sets (or replaces) one "__metadata__" entry.
  void setMetadata(llvm::StringRef key, llvm::StringRef value);
  /// Also writes each tensor's checksum (kChecksumsKey) when written.
  void setChecksums() { withChecksums = true; }

  /// The header JSON, padded, without the size prefix.
  std::string header() const;

  /// Writes the file atomically: to a temporary file in the same directory,
  /// flushed to disk, then renamed over `path`, so that a crash leaves either
  /// the old file or the complete new one, never a partial file.
  llvm::Error write(llvm::StringRef path) const;

private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    llvm::ArrayRef<char> bytes;
    /// Owns the bytes of add(); empty for addBorrowed().
    std::vector<char> storage;
  };

  llvm::Error check(llvm::StringRef name, DType dtype,
                    llvm::ArrayRef<int64_t> shape, size_t numBytes) const;
  /// The entries in file order.
  std::vector<const Entry *> layout() const;

  /// Entries are heap-allocated so that their `bytes` stay valid.
  std::vector<std::unique_ptr<Entry>> entries;
  llvm::StringMap<unsigned> indexByName;
  std::map<std::string, std::string> metadataMap;
  bool withChecksums = false;
};

} // namespace momac

#endif // MOMAC_LIB_SAFETENSORS_SAFETENSORS_H
