//===- IndexedDataset.h - Megatron-LM indexed datasets ----------*- C++ -*-===//
//
// Training data is a Megatron-LM indexed dataset (MODEL_SPEC section 8):
// PREFIX.bin holds token ids back to back, PREFIX.idx (all little-endian)
//
//   9-byte magic "MMIDIDX\0\0" | u64 version = 1 | u8 dtype code
//   u64 sequence count S | u64 document count D (documents + 1)
//   int32 sizes[S] | int64 pointers[S] | int64 doc_idx[D]
//   [optional int8 modes[S], written by Megatron's multimodal builder]
//
// sizes are tokens per sequence, pointers byte offsets into .bin, doc_idx the
// sequence index at which each document starts, with a leading 0. open()
// validates all of it against the real file sizes; a truncated or corrupt
// pair of files is an llvm::Error naming the file and the field, never a
// crash. Files are written as Megatron's builder writes them, which is also
// what open() insists on: sequences back to back in .bin, in index order.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DATA_INDEXEDDATASET_H
#define MOMAC_RUNTIME_DATA_INDEXEDDATASET_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace momac {

/// Megatron's dtype codes. Token ids are integers, so Float64 and Float32
/// are known but refused.
enum class IndexedDType : uint8_t {
  UInt8 = 1,
  Int8 = 2,
  Int16 = 3,
  Int32 = 4,
  Int64 = 5,
  Float64 = 6,
  Float32 = 7,
  UInt16 = 8,
};

/// numpy's name ("uint16", ...).
llvm::StringRef indexedDTypeName(IndexedDType dtype);
/// Bytes per token.
uint64_t indexedDTypeSize(IndexedDType dtype);
/// Megatron's choice for a vocabulary: uint16 below 65500 ids, else int32.
IndexedDType bestFittingIndexedDType(int64_t vocabSize);

/// An opened, validated .idx/.bin pair. The .bin stays memory-mapped.
class IndexedDataset {
public:
  /// Opens PREFIX.idx and PREFIX.bin. Errors start with the file's name.
  static llvm::Expected<IndexedDataset> open(llvm::StringRef prefix);

  const std::string &prefix() const { return prefixPath; }
  std::string idxPath() const { return prefixPath + ".idx"; }
  std::string binPath() const { return prefixPath + ".bin"; }
  IndexedDType dtype() const { return dtypeCode; }

  size_t numSequences() const { return sizes.size(); }
  /// Documents, not the .idx field (which is one more).
  size_t numDocuments() const { return docIndex.size() - 1; }
  llvm::ArrayRef<int32_t> sequenceLengths() const { return sizes; }
  llvm::ArrayRef<int64_t> sequencePointers() const { return pointers; }
  /// The doc_idx array: documentIndex()[d] is the first sequence of document
  /// d; the last entry ends the last document.
  llvm::ArrayRef<int64_t> documentIndex() const { return docIndex; }

  /// Tokens in .bin, all sequences together.
  uint64_t numTokens() const { return totalTokens; }
  /// Where sequence `index` starts, counted in tokens from the start of .bin.
  uint64_t sequenceStart(size_t index) const;
  /// The sequence containing token `token` of .bin (token < numTokens()).
  size_t sequenceOf(uint64_t token) const;

  /// Copies tokens [first, first + out.size()) of .bin, widened to int64.
  /// The range must lie within numTokens().
  void readTokens(uint64_t first, llvm::MutableArrayRef<int64_t> out) const;
  /// The tokens of one sequence.
  std::vector<int64_t> sequence(size_t index) const;

private:
  IndexedDataset() = default;

  std::string prefixPath;
  IndexedDType dtypeCode = IndexedDType::Int32;
  std::vector<int32_t> sizes;
  std::vector<int64_t> pointers;
  std::vector<int64_t> docIndex;
  uint64_t totalTokens = 0;
  std::unique_ptr<llvm::MemoryBuffer> bin;
};

/// Writes a dataset incrementally, as Megatron's IndexedDatasetBuilder does:
/// sequences are appended to .bin as they come, documents group consecutive
/// sequences, finish() writes the .idx. Both files are written under
/// temporary names beside their targets and renamed into place by finish(),
/// .bin first; a builder destroyed before finish() removes them.
class IndexedDatasetBuilder {
public:
  static llvm::Expected<IndexedDatasetBuilder> create(llvm::StringRef prefix,
                                                      IndexedDType dtype);
  IndexedDatasetBuilder(IndexedDatasetBuilder &&) noexcept;
  IndexedDatasetBuilder &operator=(IndexedDatasetBuilder &&) noexcept;
  ~IndexedDatasetBuilder();

  /// Appends one sequence to the current document. Fails if a token does not
  /// fit the dtype or the sequence has more than INT32_MAX tokens.
  llvm::Error addSequence(llvm::ArrayRef<int64_t> tokens);
  /// Closes the current document (Megatron's end_document).
  void endDocument();
  /// addSequence + endDocument: one document of one sequence, which is what
  /// Megatron's preprocessing writes without sentence splitting.
  llvm::Error addDocument(llvm::ArrayRef<int64_t> tokens);
  /// Writes .idx and moves both files into place. Sequences added after the
  /// last endDocument() are closed into a final document first.
  llvm::Error finish();

private:
  struct State;
  explicit IndexedDatasetBuilder(std::unique_ptr<State> state);
  std::unique_ptr<State> state;
};

/// Writes PREFIX.bin/.idx with one sequence per document.
llvm::Error writeIndexedDataset(llvm::StringRef prefix,
                                llvm::ArrayRef<std::vector<int64_t>> documents,
                                IndexedDType dtype);

} // namespace momac

#endif // MOMAC_RUNTIME_DATA_INDEXEDDATASET_H
