//===- SequenceStream.h - Packing token sequences for training --*- C++ -*-===//
//
// MODEL_SPEC section 8's packing, as Megatron-LM's GPT dataset packs: the
// dataset's sequences, in index order, form one stream of tokens with nothing
// between them; training sequence i is stream[i*S : i*S + S + 1], so that
// consecutive training sequences share one token (the last input of one is
// the first of the next), and the stream wraps around to its start when it
// runs out, a training sequence possibly spanning the boundary. Document
// boundaries do not affect packing.
//
// With shuffling, whole documents are permuted once, by a seed, and the
// stream is the documents in that order; every epoch repeats the same order.
// The permutation is a Fisher-Yates shuffle driven by std::mt19937_64(seed):
// for i from n-1 down to 1, j = r % (i+1) for the first 64-bit draw r with
// r >= 2^64 mod (i+1), then swap(order[i], order[j]). It is spelled out so
// that it is the same with every standard library.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DATA_SEQUENCESTREAM_H
#define MOMAC_RUNTIME_DATA_SEQUENCESTREAM_H

#include "runtime/data/IndexedDataset.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace momac {

struct SequenceStreamOptions {
  /// Permute documents by `seed` (MODEL_SPEC: off by default).
  bool shuffle = false;
  uint64_t seed = 0;
  /// When positive, a token id outside [0, vocabSize) is an error; ids must
  /// fit int32 either way.
  int64_t vocabSize = 0;
};

/// Hands out training sequences of seqLen + 1 tokens. Keeps a pointer to the
/// dataset, which must outlive it.
class SequenceStream {
public:
  /// Fails if seqLen < 1 or the dataset has no tokens.
  static llvm::Expected<SequenceStream>
  create(const IndexedDataset &dataset, int64_t seqLen,
         SequenceStreamOptions options = {});

  int64_t seqLen() const { return sequenceLength; }
  /// Tokens in one pass over the data.
  uint64_t streamLength() const { return dataset->numTokens(); }
  /// The documents in stream order (identity unless shuffled).
  std::vector<uint64_t> documentOrder() const;

  /// Writes the next `count` training sequences, each seqLen + 1 tokens,
  /// into `out` (which must hold exactly count * (seqLen + 1) values) and
  /// advances position() by `count`. A token id out of range is an error
  /// naming the .bin file and the sequence; the position then stays.
  llvm::Error next(size_t count, llvm::MutableArrayRef<int32_t> out);

  /// Training sequences handed out so far: what a checkpoint stores as
  /// `data_position`.
  uint64_t position() const { return consumed; }
  /// Resumes after `sequencesConsumed` sequences, as if next() had handed
  /// them out.
  void seek(uint64_t sequencesConsumed) { consumed = sequencesConsumed; }

private:
  /// A contiguous range of .bin tokens placed in the stream: the whole file
  /// when unshuffled, one document per run when shuffled.
  struct Run {
    uint64_t binStart;
    uint64_t streamStart;
  };

  SequenceStream() = default;
  llvm::Error copyTokens(uint64_t streamOffset, size_t count, int32_t *out);

  const IndexedDataset *dataset = nullptr;
  int64_t sequenceLength = 0;
  SequenceStreamOptions options;
  /// In stream order, plus a sentinel at streamLength().
  std::vector<Run> runs;
  /// The document of each run, for documentOrder().
  std::vector<uint64_t> runDocuments;
  uint64_t consumed = 0;
  std::vector<int64_t> scratch;
};

/// A training loop's data: the dataset of PREFIX and the packed stream
/// over it, which points into it.
struct PackedDataset {
  std::unique_ptr<IndexedDataset> dataset;
  std::unique_ptr<SequenceStream> stream;
};

/// Opens PREFIX.idx/.bin and packs it into sequences of seqLen + 1 tokens
/// whose ids must lie in [0, vocabSize).
llvm::Expected<PackedDataset> openPackedDataset(llvm::StringRef prefix,
                                                int64_t seqLen,
                                                int64_t vocabSize);

} // namespace momac

#endif // MOMAC_RUNTIME_DATA_SEQUENCESTREAM_H
