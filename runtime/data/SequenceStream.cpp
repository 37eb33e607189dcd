//===- SequenceStream.cpp - Packing token sequences for training ----------===//
//
// The stream is never materialized: it is a list of runs, each a contiguous
// range of .bin tokens (the .idx requires sequences back to back, so a
// document is one range), and a training sequence is copied run by run from
// the mapped .bin. Training sequence i starts at stream offset i*S mod L,
// which is computed in 128 bits so that any data_position resumes exactly.
//
//===----------------------------------------------------------------------===//

#include "runtime/data/SequenceStream.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>

using namespace momac;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// A uniform draw from [0, bound) by rejection, defined by this file rather
/// than by the standard library's distributions, whose algorithms differ
/// between implementations.
uint64_t uniformBelow(std::mt19937_64 &engine, uint64_t bound) {
  // 2^64 mod bound: draws below it would make small results more likely.
  uint64_t threshold = (0 - bound) % bound;
  uint64_t draw;
  do {
    draw = engine();
  } while (draw < threshold);
  return draw % bound;
}

} // namespace

llvm::Expected<SequenceStream>
SequenceStream::create(const IndexedDataset &dataset, int64_t seqLen,
                       SequenceStreamOptions options) {
  if (seqLen < 1)
    return makeError(llvm::formatv("{0}: sequence length {1} must be at "
                                   "least 1",
                                   dataset.prefix(), seqLen));
  if (dataset.numTokens() == 0)
    return makeError(dataset.binPath() +
                     ": the dataset has no tokens to form sequences from");

  SequenceStream stream;
  stream.dataset = &dataset;
  stream.sequenceLength = seqLen;
  stream.options = options;

  // Document d covers sequences [docIndex[d], docIndex[d+1]). Sequences
  // after the last boundary (a builder that never closed its last document)
  // form one more document, so that every token is in the stream.
  std::vector<uint64_t> boundaries(dataset.documentIndex().begin(),
                                   dataset.documentIndex().end());
  if (boundaries.back() != dataset.numSequences())
    boundaries.push_back(dataset.numSequences());
  uint64_t numDocuments = boundaries.size() - 1;

  stream.runDocuments.resize(numDocuments);
  std::iota(stream.runDocuments.begin(), stream.runDocuments.end(), 0);
  if (!options.shuffle) {
    // The documents tile the .bin in order, so the stream is the .bin.
    stream.runs.push_back({0, 0});
  } else {
    std::mt19937_64 engine(options.seed);
    std::vector<uint64_t> &order = stream.runDocuments;
    for (uint64_t i = numDocuments; i-- > 1;)
      std::swap(order[i], order[uniformBelow(engine, i + 1)]);
    uint64_t streamOffset = 0;
    for (uint64_t document : order) {
      uint64_t begin = dataset.sequenceStart(boundaries[document]);
      uint64_t end = dataset.sequenceStart(boundaries[document + 1]);
      stream.runs.push_back({begin, streamOffset});
      streamOffset += end - begin;
    }
  }
  stream.runs.push_back({0, dataset.numTokens()});
  return stream;
}

std::vector<uint64_t> SequenceStream::documentOrder() const {
  return runDocuments;
}

llvm::Error SequenceStream::copyTokens(uint64_t streamOffset, size_t count,
                                       int32_t *out) {
  int64_t limit = options.vocabSize > 0
                      ? options.vocabSize
                      : int64_t(std::numeric_limits<int32_t>::max()) + 1;
  // The last run starting at or before the offset; empty runs (empty
  // documents) share their start with the next and are skipped.
  auto run = std::upper_bound(runs.begin(), runs.end() - 1, streamOffset,
                              [](uint64_t offset, const Run &r) {
                                return offset < r.streamStart;
                              }) -
             1;
  while (count > 0) {
    uint64_t runEnd = (run + 1)->streamStart;
    uint64_t take = std::min<uint64_t>(count, runEnd - streamOffset);
    uint64_t binOffset = run->binStart + (streamOffset - run->streamStart);
    scratch.resize(take);
    dataset->readTokens(binOffset, scratch);
    for (uint64_t i = 0; i < take; ++i) {
      int64_t token = scratch[i];
      if (token < 0 || token >= limit) {
        uint64_t binToken = binOffset + i;
        size_t sequence = dataset->sequenceOf(binToken);
        return makeError(llvm::formatv(
            "{0}: token {1} of sequence {2} is {3}, outside [0, {4}){5}",
            dataset->binPath(), binToken - dataset->sequenceStart(sequence),
            sequence, token, limit,
            options.vocabSize > 0 ? "" : " (token ids must fit int32)"));
      }
      out[i] = int32_t(token);
    }
    out += take;
    count -= take;
    streamOffset += take;
    if (streamOffset == runEnd) {
      ++run;
      if (run == runs.end() - 1) {
        // A new epoch: the stream starts over.
        run = runs.begin();
        streamOffset = 0;
      }
    }
  }
  return llvm::Error::success();
}

llvm::Error SequenceStream::next(size_t count,
                                 llvm::MutableArrayRef<int32_t> out) {
  uint64_t width = uint64_t(sequenceLength) + 1;
  if (out.size() != count * width)
    return makeError(llvm::formatv("{0}: {1} sequences of {2} tokens need a "
                                   "buffer of {3} values, got {4}",
                                   dataset->prefix(), count, width,
                                   count * width, out.size()));
  uint64_t length = streamLength();
  for (size_t k = 0; k < count; ++k) {
    unsigned __int128 start =
        (unsigned __int128)(consumed + k) * uint64_t(sequenceLength);
    if (llvm::Error error =
            copyTokens(uint64_t(start % length), width, out.data() + k * width))
      return error;
  }
  consumed += count;
  return llvm::Error::success();
}

llvm::Expected<PackedDataset> momac::openPackedDataset(llvm::StringRef prefix,
                                                       int64_t seqLen,
                                                       int64_t vocabSize) {
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  if (!dataset)
    return dataset.takeError();
  PackedDataset packed;
  packed.dataset = std::make_unique<IndexedDataset>(std::move(*dataset));
  SequenceStreamOptions options;
  options.vocabSize = vocabSize;
  llvm::Expected<SequenceStream> stream =
      SequenceStream::create(*packed.dataset, seqLen, options);
  if (!stream)
    return stream.takeError();
  packed.stream = std::make_unique<SequenceStream>(std::move(*stream));
  return packed;
}
