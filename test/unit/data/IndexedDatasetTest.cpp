//===- IndexedDatasetTest.cpp - Megatron indexed datasets -----------------===//
//
// Round trips through the builder, files of every dtype code written byte by
// byte as Megatron writes them, and the exact message for each way a .idx or
// .bin can be broken.
//
//===----------------------------------------------------------------------===//

#include "runtime/data/IndexedDataset.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <algorithm>
#include <string>
#include <vector>

using namespace momac;
namespace endian = llvm::support::endian;

/// Fails the test with the error's message when `expr` is an llvm::Error.
#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    llvm::Error assertOkError = (expr);                                        \
    ASSERT_FALSE(bool(assertOkError))                                          \
        << llvm::toString(std::move(assertOkError));                           \
  } while (false)

namespace {

/// The fields of a .idx, written verbatim by rawIdx() so that tests can
/// break any one of them.
struct RawIndex {
  std::string magic = std::string("MMIDIDX\0\0", 9);
  uint64_t version = 1;
  uint8_t code = 8;
  std::vector<int32_t> sizes;
  std::vector<int64_t> pointers;
  std::vector<int64_t> docIndex = {0};
  /// Override the count fields (otherwise the array lengths).
  std::optional<uint64_t> sequenceCount;
  std::optional<uint64_t> documentCount;
};

template <typename T> void append(std::string &out, T value) {
  char bytes[sizeof(T)];
  endian::write<T, llvm::endianness::little>(bytes, value);
  out.append(bytes, sizeof(T));
}

std::string rawIdx(const RawIndex &index) {
  std::string out = index.magic;
  append<uint64_t>(out, index.version);
  out += char(index.code);
  append<uint64_t>(out, index.sequenceCount.value_or(index.sizes.size()));
  append<uint64_t>(out, index.documentCount.value_or(index.docIndex.size()));
  for (int32_t size : index.sizes)
    append<int32_t>(out, size);
  for (int64_t pointer : index.pointers)
    append<int64_t>(out, pointer);
  for (int64_t entry : index.docIndex)
    append<int64_t>(out, entry);
  return out;
}

/// A valid index for sequences of these sizes, one document each.
RawIndex indexFor(std::vector<int32_t> sizes, uint8_t code,
                  uint64_t tokenSize) {
  RawIndex index;
  index.code = code;
  index.sizes = sizes;
  int64_t pointer = 0;
  for (int32_t size : sizes) {
    index.pointers.push_back(pointer);
    pointer += size * int64_t(tokenSize);
    index.docIndex.push_back(int64_t(index.docIndex.size()));
  }
  return index;
}

class IndexedDatasetFiles : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::SmallString<128> path;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("momac-data", path));
    directory = std::string(path);
    prefix = pathOf("D");
  }
  void TearDown() override { llvm::sys::fs::remove_directories(directory); }

  std::string pathOf(llvm::StringRef name) const {
    llvm::SmallString<128> path(directory);
    llvm::sys::path::append(path, name);
    return std::string(path);
  }

  void writeFile(const std::string &path, llvm::StringRef bytes) {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    ASSERT_FALSE(ec) << ec.message();
    os << bytes;
  }

  void writeRaw(llvm::StringRef idx, llvm::StringRef bin) {
    writeFile(prefix + ".idx", idx);
    writeFile(prefix + ".bin", bin);
  }

  /// The message of opening the dataset, with the directory cut off.
  std::string errorOf() {
    llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
    if (dataset)
      return "<accepted>";
    std::string message = llvm::toString(dataset.takeError());
    std::string dir = directory + "/";
    for (size_t at; (at = message.find(dir)) != std::string::npos;)
      message.erase(at, dir.size());
    return message;
  }

  std::vector<std::string> listDirectory() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(directory, ec), end;
         !ec && it != end; it.increment(ec))
      names.push_back(llvm::sys::path::filename(it->path()).str());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string directory;
  std::string prefix;
};

uint64_t fileSize(const std::string &path) {
  uint64_t size = 0;
  EXPECT_FALSE(llvm::sys::fs::file_size(path, size));
  return size;
}

TEST_F(IndexedDatasetFiles, RoundTripUInt16) {
  std::vector<std::vector<int64_t>> documents = {{1, 2, 3}, {}, {65535, 0}};
  ASSERT_OK(writeIndexedDataset(prefix, documents, IndexedDType::UInt16));
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("D.bin", "D.idx"));
  EXPECT_EQ(fileSize(prefix + ".bin"), 10u);
  EXPECT_EQ(fileSize(prefix + ".idx"), 34u + 12 * 3 + 8 * 4);

  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
  EXPECT_EQ(dataset->dtype(), IndexedDType::UInt16);
  EXPECT_EQ(dataset->numSequences(), 3u);
  EXPECT_EQ(dataset->numDocuments(), 3u);
  EXPECT_EQ(dataset->numTokens(), 5u);
  EXPECT_THAT(dataset->sequenceLengths(), ::testing::ElementsAre(3, 0, 2));
  EXPECT_THAT(dataset->sequencePointers(), ::testing::ElementsAre(0, 6, 6));
  EXPECT_THAT(dataset->documentIndex(), ::testing::ElementsAre(0, 1, 2, 3));
  for (size_t i = 0; i < documents.size(); ++i)
    EXPECT_EQ(dataset->sequence(i), documents[i]) << i;
  EXPECT_EQ(dataset->sequenceStart(2), 3u);
  EXPECT_EQ(dataset->sequenceStart(3), 5u);
  // Token 3 starts both the empty sequence 1 and sequence 2; it is in 2.
  EXPECT_EQ(dataset->sequenceOf(0), 0u);
  EXPECT_EQ(dataset->sequenceOf(2), 0u);
  EXPECT_EQ(dataset->sequenceOf(3), 2u);
  EXPECT_EQ(dataset->sequenceOf(4), 2u);
}

TEST_F(IndexedDatasetFiles, RoundTripInt32) {
  std::vector<std::vector<int64_t>> documents = {
      {1000000000, -5, 0}, {7}, {2147483647, -2147483648LL}};
  ASSERT_OK(writeIndexedDataset(prefix, documents, IndexedDType::Int32));
  EXPECT_EQ(fileSize(prefix + ".bin"), 24u);
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
  EXPECT_EQ(dataset->dtype(), IndexedDType::Int32);
  for (size_t i = 0; i < documents.size(); ++i)
    EXPECT_EQ(dataset->sequence(i), documents[i]) << i;
  EXPECT_THAT(dataset->sequencePointers(), ::testing::ElementsAre(0, 12, 16));
  std::vector<int64_t> middle(3);
  dataset->readTokens(2, middle);
  EXPECT_THAT(middle, ::testing::ElementsAre(0, 7, 2147483647));
}

TEST_F(IndexedDatasetFiles, BuilderGroupsSequencesIntoDocuments) {
  llvm::Expected<IndexedDatasetBuilder> builder =
      IndexedDatasetBuilder::create(prefix, IndexedDType::UInt8);
  ASSERT_TRUE(bool(builder)) << llvm::toString(builder.takeError());
  ASSERT_OK(builder->addSequence({1, 2}));
  ASSERT_OK(builder->addSequence({3}));
  builder->endDocument();
  ASSERT_OK(builder->addDocument({4, 5, 6}));
  // Not closed: finish() closes it.
  ASSERT_OK(builder->addSequence({255}));
  ASSERT_OK(builder->finish());
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("D.bin", "D.idx"));

  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
  EXPECT_EQ(dataset->numSequences(), 4u);
  EXPECT_EQ(dataset->numDocuments(), 3u);
  EXPECT_THAT(dataset->documentIndex(), ::testing::ElementsAre(0, 2, 3, 4));
  EXPECT_THAT(dataset->sequence(3), ::testing::ElementsAre(255));
  // Finishing twice, or adding afterwards, is refused.
  EXPECT_THAT(llvm::toString(builder->finish()),
              ::testing::EndsWith("D.bin: the dataset was already finished"));
  EXPECT_THAT(llvm::toString(builder->addSequence({1})),
              ::testing::EndsWith("D.bin: the dataset was already finished"));
}

TEST_F(IndexedDatasetFiles, EveryIntegerDTypeRoundTrips) {
  struct Case {
    IndexedDType dtype;
    std::vector<int64_t> tokens;
  };
  std::vector<Case> cases = {
      {IndexedDType::UInt8, {0, 255, 17}},
      {IndexedDType::Int8, {-128, 127, -1}},
      {IndexedDType::Int16, {-32768, 32767, -1}},
      {IndexedDType::UInt16, {0, 65535, 300}},
      {IndexedDType::Int32, {-2147483648LL, 2147483647, -1}},
      {IndexedDType::Int64, {INT64_MIN, INT64_MAX, int64_t(1) << 40}},
  };
  for (const Case &c : cases) {
    ASSERT_OK(writeIndexedDataset(prefix, {c.tokens}, c.dtype));
    llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
    ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
    EXPECT_EQ(dataset->dtype(), c.dtype);
    EXPECT_EQ(fileSize(prefix + ".bin"),
              c.tokens.size() * indexedDTypeSize(c.dtype));
    EXPECT_EQ(dataset->sequence(0), c.tokens)
        << indexedDTypeName(c.dtype).str();
  }
}

TEST_F(IndexedDatasetFiles, EveryDTypeCodeReadsFromRawFiles) {
  // Each code's tokens as little-endian bytes, written by hand, and the ids
  // they must read as (sign extension included).
  struct Case {
    uint8_t code;
    uint64_t tokenSize;
    std::string bin;
    std::vector<int64_t> expected;
  };
  std::vector<Case> cases = {
      {1, 1, std::string("\x00\x7f\xff", 3), {0, 127, 255}},
      {2, 1, std::string("\x00\x7f\xff\x80", 4), {0, 127, -1, -128}},
      {3, 2, std::string("\x01\x00\xff\xff\x00\x80", 6), {1, -1, -32768}},
      {4, 4, std::string("\x01\x02\x00\x00\xff\xff\xff\xff", 8), {513, -1}},
      {5, 8, std::string("\x00\x00\x00\x00\x00\x01\x00\x00", 8), {1LL << 40}},
      {8, 2, std::string("\x01\x00\xff\xff\x00\x80", 6), {1, 65535, 32768}},
  };
  for (const Case &c : cases) {
    int32_t count = int32_t(c.bin.size() / c.tokenSize);
    // Two sequences: the first token alone, then the rest.
    writeRaw(rawIdx(indexFor({1, count - 1}, c.code, c.tokenSize)), c.bin);
    llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
    ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
    EXPECT_EQ(uint8_t(dataset->dtype()), c.code);
    std::vector<int64_t> all(dataset->numTokens());
    dataset->readTokens(0, all);
    EXPECT_EQ(all, c.expected) << "code " << unsigned(c.code);
    EXPECT_EQ(dataset->sequence(0).front(), c.expected.front());
  }
}

TEST_F(IndexedDatasetFiles, AcceptsMultimodalSequenceModes) {
  // Megatron's multimodal builder appends one mode byte per sequence.
  std::string idx = rawIdx(indexFor({2, 1}, 8, 2)) + std::string("\0\1", 2);
  writeRaw(idx, std::string(6, '\1'));
  EXPECT_EQ(errorOf(), "<accepted>");
}

TEST(IndexedDType, MegatronChoosesUInt16ForSmallVocabularies) {
  EXPECT_EQ(bestFittingIndexedDType(512), IndexedDType::UInt16);
  EXPECT_EQ(bestFittingIndexedDType(65499), IndexedDType::UInt16);
  EXPECT_EQ(bestFittingIndexedDType(65500), IndexedDType::Int32);
  EXPECT_EQ(bestFittingIndexedDType(256000), IndexedDType::Int32);
  EXPECT_EQ(indexedDTypeName(IndexedDType::UInt16), "uint16");
  EXPECT_EQ(indexedDTypeSize(IndexedDType::Int64), 8u);
}

TEST_F(IndexedDatasetFiles, BuilderRejectsTokensThatDoNotFit) {
  EXPECT_EQ(llvm::toString(writeIndexedDataset(prefix, {{1, 2}, {3, 70000}},
                                               IndexedDType::UInt16)),
            prefix + ".bin: token 70000 (sequence 1, position 1) does not "
                     "fit uint16");
  EXPECT_EQ(
      llvm::toString(writeIndexedDataset(prefix, {{-1}}, IndexedDType::UInt8)),
      prefix + ".bin: token -1 (sequence 0, position 0) does not fit "
               "uint8");
  EXPECT_EQ(
      llvm::toString(writeIndexedDataset(prefix, {{1}}, IndexedDType::Float32)),
      prefix + ".bin: cannot write tokens as float32; token ids must be "
               "integers");
  // Nothing is left behind, not even the temporary files.
  EXPECT_TRUE(listDirectory().empty());
}

TEST_F(IndexedDatasetFiles, UnfinishedBuilderLeavesNothing) {
  {
    llvm::Expected<IndexedDatasetBuilder> builder =
        IndexedDatasetBuilder::create(prefix, IndexedDType::Int32);
    ASSERT_TRUE(bool(builder)) << llvm::toString(builder.takeError());
    ASSERT_OK(builder->addDocument({1, 2, 3}));
    EXPECT_EQ(listDirectory().size(), 1u); // the .bin's temporary
  }
  EXPECT_TRUE(listDirectory().empty());
}

TEST_F(IndexedDatasetFiles, RewriteReplacesBothFiles) {
  ASSERT_OK(writeIndexedDataset(prefix, {{1, 2, 3}}, IndexedDType::UInt16));
  ASSERT_OK(writeIndexedDataset(prefix, {{4}, {5}}, IndexedDType::Int32));
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("D.bin", "D.idx"));
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  ASSERT_TRUE(bool(dataset)) << llvm::toString(dataset.takeError());
  EXPECT_EQ(dataset->dtype(), IndexedDType::Int32);
  EXPECT_EQ(dataset->numSequences(), 2u);
}

TEST_F(IndexedDatasetFiles, WriteIntoMissingDirectoryFails) {
  std::string missing = pathOf("no/such/D");
  EXPECT_THAT(
      llvm::toString(writeIndexedDataset(missing, {{1}}, IndexedDType::UInt16)),
      ::testing::StartsWith(missing + ".bin: cannot create a "
                                      "temporary file beside it: "));
}

//===----------------------------------------------------------------------===//
// Corrupt files: the exact message for each.
//===----------------------------------------------------------------------===//

TEST_F(IndexedDatasetFiles, MissingFiles) {
  EXPECT_EQ(errorOf(), "D.idx: cannot read: No such file or directory");
  writeFile(prefix + ".idx", rawIdx(indexFor({1}, 8, 2)));
  EXPECT_EQ(errorOf(), "D.bin: cannot read: No such file or directory");
}

TEST_F(IndexedDatasetFiles, TruncatedHeader) {
  writeRaw(rawIdx(indexFor({1}, 8, 2)).substr(0, 20), "ab");
  EXPECT_EQ(errorOf(), "D.idx: file is 20 bytes, too short for the 34-byte "
                       "header");
  writeRaw("", "");
  EXPECT_EQ(errorOf(), "D.idx: file is 0 bytes, too short for the 34-byte "
                       "header");
}

TEST_F(IndexedDatasetFiles, BadMagic) {
  RawIndex index = indexFor({1}, 8, 2);
  index.magic = std::string("MMIDIDX\0\1", 9);
  writeRaw(rawIdx(index), "ab");
  EXPECT_EQ(errorOf(), "D.idx: magic is \"MMIDIDX\\00\\01\", expected "
                       "\"MMIDIDX\\00\\00\": not a Megatron indexed dataset "
                       "index");
  // The legacy fairseq "TNTIDX" format is not this one.
  index.magic = std::string("TNTIDX\0\0\0", 9);
  writeRaw(rawIdx(index), "ab");
  EXPECT_THAT(errorOf(), ::testing::StartsWith("D.idx: magic is \"TNTIDX"));
}

TEST_F(IndexedDatasetFiles, BadVersion) {
  RawIndex index = indexFor({1}, 8, 2);
  index.version = 2;
  writeRaw(rawIdx(index), "ab");
  EXPECT_EQ(errorOf(), "D.idx: version is 2, only version 1 is supported");
}

TEST_F(IndexedDatasetFiles, UnknownDTypeCode) {
  for (uint8_t code : {0, 9, 255}) {
    writeRaw(rawIdx(indexFor({1}, code, 2)), "ab");
    EXPECT_EQ(errorOf(), "D.idx: dtype code " + std::to_string(code) +
                             " is unknown (Megatron's codes are 1 to 8)");
  }
}

TEST_F(IndexedDatasetFiles, FloatDTypeCodes) {
  writeRaw(rawIdx(indexFor({1}, 6, 8)), std::string(8, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: dtype code 6 (float64) is not an integer type; "
                       "token ids must be integers");
  writeRaw(rawIdx(indexFor({1}, 7, 4)), std::string(4, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: dtype code 7 (float32) is not an integer type; "
                       "token ids must be integers");
}

TEST_F(IndexedDatasetFiles, CountsDoNotMatchFileSize) {
  RawIndex index = indexFor({1, 2}, 8, 2);
  index.sequenceCount = 3;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: file is 82 bytes, too short for sequence count "
                       "3 and document count 3 (truncated, or the counts are "
                       "corrupt)");
  index.sequenceCount = 1;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: file is 82 bytes, but sequence count 1 and "
                       "document count 3 need 70 bytes (or 71 with sequence "
                       "modes)");
  // Counts so large that 12 * S would overflow 64 bits.
  index.sequenceCount = uint64_t(1) << 62;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_THAT(errorOf(), ::testing::HasSubstr("too short for sequence count "
                                              "4611686018427387904"));
  index.sequenceCount = std::nullopt;
  index.documentCount = ~uint64_t(0);
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_THAT(errorOf(),
              ::testing::HasSubstr("document count 18446744073709551615"));
}

TEST_F(IndexedDatasetFiles, TruncatedArrays) {
  std::string idx = rawIdx(indexFor({1, 2}, 8, 2));
  writeRaw(idx.substr(0, idx.size() - 3), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: file is 79 bytes, too short for sequence count "
                       "2 and document count 3 (truncated, or the counts are "
                       "corrupt)");
  // Cut inside the last array but with room for a count of 1 fewer document.
  RawIndex index = indexFor({1, 2}, 8, 2);
  index.documentCount = 2;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: file is 82 bytes, but sequence count 2 and "
                       "document count 2 need 74 bytes (or 76 with sequence "
                       "modes)");
}

TEST_F(IndexedDatasetFiles, ZeroDocumentCount) {
  RawIndex index = indexFor({}, 8, 2);
  index.docIndex.clear();
  writeRaw(rawIdx(index), "");
  EXPECT_EQ(errorOf(), "D.idx: document count is 0; it must be at least 1 "
                       "(doc_idx starts with 0)");
}

TEST_F(IndexedDatasetFiles, NegativeSize) {
  RawIndex index = indexFor({1, 2}, 8, 2);
  index.sizes[1] = -2;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: sizes[1] is -2, expected a non-negative token "
                       "count");
}

TEST_F(IndexedDatasetFiles, PointersOutOfPlace) {
  RawIndex index = indexFor({1, 2, 3}, 8, 2);
  index.pointers[2] = 4; // overlaps sequence 1
  writeRaw(rawIdx(index), std::string(12, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: pointers[2] is 4, expected 6 (pointers[1] + "
                       "sizes[1] * 2 bytes: sequences are back to back in the "
                       ".bin)");
  index = indexFor({1, 2, 3}, 8, 2);
  index.pointers[0] = 2;
  writeRaw(rawIdx(index), std::string(12, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: pointers[0] is 2, expected 0");
  index = indexFor({1, 2, 3}, 8, 2);
  index.pointers[1] = -1;
  writeRaw(rawIdx(index), std::string(12, '\0'));
  EXPECT_THAT(errorOf(), ::testing::StartsWith("D.idx: pointers[1] is -1, "
                                               "expected 2"));
}

TEST_F(IndexedDatasetFiles, BadDocumentIndex) {
  RawIndex index = indexFor({1, 1, 1}, 8, 2);
  index.docIndex[0] = 1;
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: doc_idx[0] is 1, expected 0");
  index = indexFor({1, 1, 1}, 8, 2);
  index.docIndex = {0, 2, 1, 3};
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: doc_idx[2] is 1, less than doc_idx[1] = 2");
  index = indexFor({1, 1, 1}, 8, 2);
  index.docIndex = {0, 1, 2, 4};
  writeRaw(rawIdx(index), std::string(6, '\0'));
  EXPECT_EQ(errorOf(), "D.idx: doc_idx[3] is 4, beyond the sequence count 3");
}

TEST_F(IndexedDatasetFiles, BinSizeMismatch) {
  std::string idx = rawIdx(indexFor({2, 3}, 8, 2));
  writeRaw(idx, std::string(7, '\0'));
  EXPECT_EQ(errorOf(), "D.bin: file is 7 bytes, but D.idx describes 10 bytes "
                       "(5 uint16 tokens) (truncated?)");
  writeRaw(idx, std::string(12, '\0'));
  EXPECT_EQ(errorOf(), "D.bin: file is 12 bytes, but D.idx describes 10 bytes "
                       "(5 uint16 tokens)");
}

TEST_F(IndexedDatasetFiles, NoCorruptionCrashes) {
  // Every truncation of a valid .idx is refused, and every single-byte
  // change is either accepted or refused with a message.
  std::string idx = rawIdx(indexFor({2, 0, 3}, 8, 2));
  std::string bin(10, '\x01');
  writeRaw(idx, bin);
  ASSERT_EQ(errorOf(), "<accepted>");
  for (size_t length = 0; length < idx.size(); ++length) {
    writeRaw(idx.substr(0, length), bin);
    EXPECT_NE(errorOf(), "<accepted>") << length;
  }
  for (size_t at = 0; at < idx.size(); ++at) {
    for (char replacement : {'\0', '\x01', '\x80', '\xff'}) {
      std::string mutated = idx;
      if (mutated[at] == replacement)
        continue;
      mutated[at] = replacement;
      writeRaw(mutated, bin);
      EXPECT_FALSE(errorOf().empty());
    }
  }
}

} // namespace
