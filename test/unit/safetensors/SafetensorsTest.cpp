//===- SafetensorsTest.cpp - Reading and writing safetensors --------------===//
//
// Round trips through real files, the reference implementation's layout, and
// one test per way a file can be broken, each checking the exact message a
// user would read.
//
//===----------------------------------------------------------------------===//

#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <cstring>
#include <sys/stat.h>
#include <unistd.h>
#include <string>
#include <vector>

using namespace momac;

/// Fails the test with the error's message when `expr` is an llvm::Error.
#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    llvm::Error assertOkError = (expr);                                        \
    ASSERT_FALSE(bool(assertOkError))                                          \
        << llvm::toString(std::move(assertOkError));                           \
  } while (false)

namespace {

/// The bytes of a safetensors file with `header` as its JSON and `data` as
/// its data section; `sizeField` overrides the header size written.
std::string fileBytes(llvm::StringRef header, llvm::StringRef data = "",
                      std::optional<uint64_t> sizeField = std::nullopt) {
  char size[8];
  llvm::support::endian::write64le(size, sizeField.value_or(header.size()));
  return std::string(size, 8) + header.str() + data.str();
}

llvm::Expected<SafetensorsFile> parse(llvm::StringRef bytes) {
  return SafetensorsFile::fromBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(bytes, "W.safetensors"));
}

std::string errorOf(llvm::StringRef bytes) {
  llvm::Expected<SafetensorsFile> file = parse(bytes);
  if (file)
    return "<accepted>";
  return llvm::toString(file.takeError());
}

/// A header of one tensor "x".
std::string oneTensor(llvm::StringRef dtype, llvm::StringRef shape,
                      llvm::StringRef offsets) {
  return (R"({"x":{"dtype":)" + dtype + R"(,"shape":)" + shape +
          R"(,"data_offsets":)" + offsets + "}}")
      .str();
}

llvm::ArrayRef<char> bytesOf(llvm::ArrayRef<float> values) {
  return llvm::ArrayRef<char>(reinterpret_cast<const char *>(values.data()),
                              values.size() * sizeof(float));
}

class SafetensorsFiles : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::SmallString<128> path;
    ASSERT_FALSE(
        llvm::sys::fs::createUniqueDirectory("momac-safetensors", path));
    directory = std::string(path);
  }
  void TearDown() override { llvm::sys::fs::remove_directories(directory); }

  std::string pathOf(llvm::StringRef name) const {
    llvm::SmallString<128> path(directory);
    llvm::sys::path::append(path, name);
    return std::string(path);
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
};

TEST_F(SafetensorsFiles, RoundTripWithMetadata) {
  std::vector<float> weights = {1.5f, -2.0f, 0.0f, 3.25f, 1e-20f, -7.0f};
  int32_t count = 42;
  uint16_t bf16[] = {0x3f80, 0xc000, 0x0000, 0x7f80}; // 1, -2, 0, inf

  SafetensorsWriter writer;
  ASSERT_OK(writer.add("w", {2, 3}, weights));
  ASSERT_OK(writer.add(
      "count", DType::I32, {},
      llvm::ArrayRef<char>(reinterpret_cast<const char *>(&count), 4)));
  ASSERT_OK(writer.addBorrowed(
      "b", DType::BF16, {4},
      llvm::ArrayRef<char>(reinterpret_cast<const char *>(bf16), 8)));
  ASSERT_OK(writer.add("empty", DType::U8, {0, 5}, {}));
  writer.setMetadata("step", "12");
  writer.setMetadata("data_position", "96");
  writer.setMetadata("step", "13");

  std::string path = pathOf("ckpt.safetensors");
  ASSERT_OK(writer.write(path));

  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_EQ(file->path(), path);
  // Widest dtype first, then by name, as the reference writes them.
  EXPECT_THAT(file->names(),
              ::testing::ElementsAre("w", "count", "b", "empty"));
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{
                                  {"data_position", "96"}, {"step", "13"}}));
  EXPECT_EQ(file->getMetadata("step"), llvm::StringRef("13"));
  EXPECT_EQ(file->getMetadata("rng"), std::nullopt);

  const TensorInfo *w = file->find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::F32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->begin, 0u);
  EXPECT_EQ(w->end, 24u);
  EXPECT_EQ(w->numElements(), 6u);
  llvm::Expected<std::vector<float>> values = file->readFloats("w");
  ASSERT_TRUE(bool(values)) << llvm::toString(values.takeError());
  EXPECT_EQ(*values, weights);

  const TensorInfo *c = file->find("count");
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->shape.empty());
  EXPECT_EQ(c->numElements(), 1u);
  int32_t readCount;
  ASSERT_EQ(file->data(*c).size(), 4u);
  std::memcpy(&readCount, file->data(*c).data(), 4);
  EXPECT_EQ(readCount, 42);

  llvm::Expected<std::vector<float>> widened = file->readFloats("b");
  ASSERT_TRUE(bool(widened)) << llvm::toString(widened.takeError());
  EXPECT_THAT(*widened, ::testing::ElementsAre(1.0f, -2.0f, 0.0f, INFINITY));

  const TensorInfo *empty = file->find("empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->numElements(), 0u);
  EXPECT_TRUE(file->data(*empty).empty());
  EXPECT_EQ(file->find("missing"), nullptr);
}

TEST(Safetensors, HeaderIsTheReferenceLayout) {
  SafetensorsWriter writer;
  std::vector<float> a = {1, 2};
  ASSERT_OK(writer.add("b", DType::I8, {3}, {'\1', '\2', '\3'}));
  ASSERT_OK(writer.add("a", {2}, a));
  writer.setMetadata("format", "pt");
  EXPECT_EQ(writer.header(),
            R"({"__metadata__":{"format":"pt"},)"
            R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})"
            "      ");
  EXPECT_EQ(writer.header().size() % 8, 0u);

  SafetensorsWriter empty;
  EXPECT_EQ(empty.header(), "{}      ");
}

TEST_F(SafetensorsFiles, WrittenBytesAreExact) {
  SafetensorsWriter writer;
  std::vector<float> a = {1, 2};
  ASSERT_OK(writer.add("a", {2}, a));
  std::string path = pathOf("a.safetensors");
  ASSERT_OK(writer.write(path));
  auto buffer = llvm::MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(buffer));
  std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )";
  std::string data(reinterpret_cast<const char *>(a.data()), 8);
  EXPECT_EQ((*buffer)->getBuffer(), fileBytes(header, data));
}

TEST_F(SafetensorsFiles, EmptyFileRoundTrips) {
  std::string path = pathOf("empty.safetensors");
  ASSERT_OK(SafetensorsWriter().write(path));
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_TRUE(file->metadata().empty());
}

TEST_F(SafetensorsFiles, AtomicWriteLeavesNoTemporaryFile) {
  std::string path = pathOf("W.safetensors");
  std::vector<float> first = {1, 2, 3}, second = {4, 5};
  SafetensorsWriter writer1, writer2;
  ASSERT_OK(writer1.add("x", {3}, first));
  ASSERT_OK(writer2.add("y", {2}, second));
  ASSERT_OK(writer1.write(path));
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("W.safetensors"));
  // Replacing an existing file goes through a temporary too.
  ASSERT_OK(writer2.write(path));
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("W.safetensors"));
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_THAT(file->names(), ::testing::ElementsAre("y"));
}

TEST_F(SafetensorsFiles, WriteIntoMissingDirectoryFails) {
  std::string path = pathOf("no/such/dir/W.safetensors");
  llvm::Error error = SafetensorsWriter().write(path);
  ASSERT_TRUE(bool(error));
  EXPECT_THAT(llvm::toString(std::move(error)),
              ::testing::StartsWith(
                  path + ": cannot create a temporary file beside it: "));
  EXPECT_TRUE(listDirectory().empty());
}

TEST_F(SafetensorsFiles, WriteOverADirectoryFailsAndCleansUp) {
  std::string path = pathOf("taken");
  ASSERT_FALSE(llvm::sys::fs::create_directory(path));
  ASSERT_FALSE(llvm::sys::fs::create_directory(pathOf("taken/child")));
  llvm::Error error = SafetensorsWriter().write(path);
  ASSERT_TRUE(bool(error));
  EXPECT_EQ(llvm::toString(std::move(error)),
            path + ": exists and is a directory; only regular files are "
                   "written");
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("taken"));
}

// Issue 8: `momarun init -o /dev/null` replaced the device with a regular
// file. Only regular files are replaced: a FIFO is refused and left as it
// was (devices take the same path; the tests never touch the real /dev).
TEST_F(SafetensorsFiles, WriteOverAFifoIsRefusedAndLeavesIt) {
  std::string path = pathOf("pipe");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  llvm::Error error = SafetensorsWriter().write(path);
  ASSERT_TRUE(bool(error));
  EXPECT_EQ(llvm::toString(std::move(error)),
            path + ": exists and is a FIFO; only regular files are written");
  llvm::sys::fs::file_status status;
  ASSERT_FALSE(llvm::sys::fs::status(path, status, /*follow=*/false));
  EXPECT_EQ(status.type(), llvm::sys::fs::file_type::fifo_file);
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("pipe"));
}

// A symlink is written through: its target gets the new contents
// (atomically) and the link stays a link.
TEST_F(SafetensorsFiles, WriteThroughASymlinkReplacesItsTarget) {
  std::vector<float> values = {1.0f, 2.0f};
  SafetensorsWriter first;
  ASSERT_FALSE(bool(first.addBorrowed("x", DType::F32, {2}, bytesOf(values))));
  ASSERT_FALSE(bool(first.write(pathOf("real.safetensors"))));
  ASSERT_FALSE(llvm::sys::fs::create_link("real.safetensors",
                                          pathOf("link.safetensors")));
  std::vector<float> next = {3.0f, 4.0f};
  SafetensorsWriter second;
  ASSERT_FALSE(bool(second.addBorrowed("x", DType::F32, {2}, bytesOf(next))));
  ASSERT_FALSE(bool(second.write(pathOf("link.safetensors"))));
  llvm::sys::fs::file_status status;
  ASSERT_FALSE(llvm::sys::fs::status(pathOf("link.safetensors"), status,
                                     /*follow=*/false));
  EXPECT_EQ(status.type(), llvm::sys::fs::file_type::symlink_file);
  llvm::Expected<SafetensorsFile> read =
      SafetensorsFile::open(pathOf("real.safetensors"));
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  EXPECT_THAT(listDirectory(),
              ::testing::ElementsAre("link.safetensors", "real.safetensors"));
}

// What a kill -9 during a write leaves behind is cleared by the next run.
TEST_F(SafetensorsFiles, StaleTemporariesAreRemoved) {
  std::string target = pathOf("checkpoint.safetensors");
  for (const char *name : {"checkpoint.safetensors.tmp-1a2b",
                           "checkpoint.safetensors.tmp-ffff", "other.tmp-1"}) {
    int fd;
    ASSERT_FALSE(llvm::sys::fs::openFileForWrite(pathOf(name), fd));
    ::close(fd);
  }
  EXPECT_EQ(momac::removeStaleTemporaries(target), 2u);
  EXPECT_THAT(listDirectory(), ::testing::ElementsAre("other.tmp-1"));
}

TEST_F(SafetensorsFiles, MissingFile) {
  std::string path = pathOf("absent.safetensors");
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_FALSE(bool(file));
  EXPECT_EQ(llvm::toString(file.takeError()),
            path + ": cannot read: No such file or directory");
}

TEST(Safetensors, WriterRejectsBadTensors) {
  SafetensorsWriter writer;
  std::vector<float> four = {1, 2, 3, 4};
  ASSERT_OK(writer.add("x", {2, 2}, four));
  auto message = [](llvm::Error error) {
    return error ? llvm::toString(std::move(error)) : "<accepted>";
  };
  EXPECT_EQ(message(writer.add("x", {4}, four)),
            "cannot add tensor 'x': a tensor of that name was already added");
  EXPECT_EQ(message(writer.add("__metadata__", {4}, four)),
            "cannot add tensor '__metadata__': the name is reserved for the "
            "metadata");
  EXPECT_EQ(message(writer.add("y", {2, -2}, four)),
            "cannot add tensor 'y': shape [2, -2] has a negative dimension");
  EXPECT_EQ(message(writer.add("y", {3}, four)),
            "cannot add tensor 'y': 16 bytes do not match shape [3] of F32 "
            "(12 bytes)");
  EXPECT_EQ(message(writer.add("y", DType::I64, {int64_t(1) << 62, 4},
                               bytesOf(four))),
            "cannot add tensor 'y': shape [4611686018427387904, 4] of I64 is "
            "too large");
  EXPECT_EQ(message(writer.add("bad\xff", {4}, four)),
            "cannot add tensor 'bad\xff': the name is not valid UTF-8");
  EXPECT_THAT(message(writer.addBorrowed("y", DType::F16, {3}, bytesOf(four))),
              ::testing::HasSubstr("16 bytes do not match shape [3] of F16 (6 "
                                   "bytes)"));
}

TEST_F(SafetensorsFiles, WriterRejectsInvalidMetadata) {
  SafetensorsWriter writer;
  writer.setMetadata("rng", "\xc3\x28");
  std::string path = pathOf("W.safetensors");
  llvm::Error error = writer.write(path);
  ASSERT_TRUE(bool(error));
  EXPECT_EQ(llvm::toString(std::move(error)),
            path + ": metadata entry 'rng' is not valid UTF-8");
  EXPECT_TRUE(listDirectory().empty());
}

TEST(Safetensors, ReadsFloat16) {
  // 1, -2, the smallest subnormal (2^-24), 65504 (the largest half).
  uint16_t halves[] = {0x3c00, 0xc000, 0x0001, 0x7bff};
  std::string data(reinterpret_cast<const char *>(halves), sizeof(halves));
  llvm::Expected<SafetensorsFile> file =
      parse(fileBytes(oneTensor(R"("F16")", "[4]", "[0, 8]"), data));
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  llvm::Expected<std::vector<float>> values = file->readFloats("x");
  ASSERT_TRUE(bool(values)) << llvm::toString(values.takeError());
  EXPECT_THAT(*values,
              ::testing::ElementsAre(1.0f, -2.0f, 5.9604645e-8f, 65504.0f));
}

TEST(Safetensors, ReadFloatsErrors) {
  llvm::Expected<SafetensorsFile> file = parse(
      fileBytes(oneTensor(R"("I32")", "[2]", "[0, 8]"), std::string(8, '\0')));
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  llvm::Expected<std::vector<float>> wrongType = file->readFloats("x");
  ASSERT_FALSE(bool(wrongType));
  EXPECT_EQ(llvm::toString(wrongType.takeError()),
            "W.safetensors: tensor 'x' is I32, expected a floating-point "
            "dtype (F32, F16, BF16 or F64)");
  llvm::Expected<std::vector<float>> missing = file->readFloats("y");
  ASSERT_FALSE(bool(missing));
  EXPECT_EQ(llvm::toString(missing.takeError()),
            "W.safetensors: no tensor 'y'");
}

TEST(Safetensors, KeepsHeaderOrder) {
  // Header order differs from data order; names() follows the header.
  std::string header =
      R"({"second":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
      R"("first":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("__metadata__":{"k":"v"}})";
  llvm::Expected<SafetensorsFile> file = parse(fileBytes(header, "abcd"));
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_THAT(file->names(), ::testing::ElementsAre("second", "first"));
  EXPECT_EQ(std::string(file->data(*file->find("second")).data(), 2), "cd");
  EXPECT_EQ(file->getMetadata("k"), llvm::StringRef("v"));
}

TEST(Safetensors, AcceptsEscapedNamesAndZeroSizedTensors) {
  std::string header =
      R"({"a\"b\\c\u00e9":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("z":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},)"
      R"("t":{"dtype":"BOOL","shape":[1],"data_offsets":[2,3]}}   )";
  llvm::Expected<SafetensorsFile> file = parse(fileBytes(header, "xyz"));
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_THAT(file->names(),
              ::testing::ElementsAre("a\"b\\c\xc3\xa9", "z", "t"));
}

TEST(Safetensors, EveryDTypeNameRoundTrips) {
  for (llvm::StringRef name :
       {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
        "I32", "U32", "F32", "F64", "I64", "U64"}) {
    std::optional<DType> dtype = parseDType(name);
    ASSERT_TRUE(dtype.has_value()) << name.str();
    EXPECT_EQ(dtypeName(*dtype), name);
  }
  EXPECT_EQ(dtypeSize(DType::BF16), 2u);
  EXPECT_EQ(dtypeSize(DType::I64), 8u);
  EXPECT_EQ(parseDType("f32"), std::nullopt);
}

//===----------------------------------------------------------------------===//
// Corrupt files: the exact message for each.
//===----------------------------------------------------------------------===//

TEST(SafetensorsCorrupt, EmptyAndTruncatedSizeField) {
  EXPECT_EQ(errorOf(""), "W.safetensors: file is 0 bytes, too short for the "
                         "8-byte header size");
  EXPECT_EQ(errorOf(std::string("\x10\0\0\0\0", 5)),
            "W.safetensors: file is 5 bytes, too short for the 8-byte header "
            "size");
}

TEST(SafetensorsCorrupt, HeaderSizeLargerThanFile) {
  std::string header = oneTensor(R"("F32")", "[2]", "[0, 8]");
  EXPECT_EQ(errorOf(fileBytes(header, "", 1000)),
            "W.safetensors: header size 1000 exceeds the " +
                std::to_string(header.size()) +
                " bytes after the size field (truncated or not a safetensors "
                "file)");
  // A size field that would wrap around if added to anything.
  EXPECT_THAT(errorOf(fileBytes(header, "", ~uint64_t(0))),
              ::testing::HasSubstr("header size 18446744073709551615 exceeds"));
}

TEST(SafetensorsCorrupt, TruncatedData) {
  // A correct file cut short in its data section.
  std::string header = oneTensor(R"("F32")", "[2, 2]", "[0, 16]");
  EXPECT_EQ(errorOf(fileBytes(header, std::string(10, '\0'))),
            "W.safetensors: tensor 'x': data_offsets [0, 16] exceed the data "
            "section (10 bytes)");
}

TEST(SafetensorsCorrupt, EmptyHeader) {
  EXPECT_EQ(errorOf(fileBytes("")), "W.safetensors: header is empty");
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  EXPECT_EQ(errorOf(fileBytes("[1, 2]")),
            "W.safetensors: header must be a JSON object, but it starts with "
            "'['");
  EXPECT_EQ(errorOf(fileBytes(" {}")),
            "W.safetensors: header must be a JSON object, but it starts with "
            "' '");
}

TEST(SafetensorsCorrupt, BadJson) {
  EXPECT_EQ(errorOf(fileBytes(R"({"x": {"dtype": )")),
            "W.safetensors: header: line 1, column 16: invalid JSON: "
            "Unexpected EOF");
  EXPECT_EQ(errorOf(fileBytes("{} trailing")),
            "W.safetensors: header: line 1, column 3: invalid JSON: Text "
            "after end of document");
  EXPECT_EQ(errorOf(fileBytes("{\"\xff\": 1}")),
            "W.safetensors: header: line 1, column 2: invalid JSON: Invalid "
            "UTF-8 sequence");
}

TEST(SafetensorsCorrupt, DeepNestingIsRefusedBeforeParsing) {
  // llvm::json would recurse a million times and overflow the stack.
  std::string deep =
      R"({"x":)" + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  EXPECT_EQ(errorOf(fileBytes(deep)),
            "W.safetensors: header: line 1, column 69: invalid JSON: nested "
            "deeper than 64 levels");
  // Brackets inside strings do not count.
  std::string quoted =
      R"({"__metadata__":{"k":")" + std::string(100, '[') + R"("}})";
  EXPECT_EQ(errorOf(fileBytes(quoted)), "<accepted>");
}

TEST(SafetensorsCorrupt, DuplicateNames) {
  // llvm::json keeps the last of duplicate keys without a word, so the
  // reader has to look for them itself.
  llvm::Expected<llvm::json::Value> value =
      llvm::json::parse(R"({"a":1,"a":2})");
  ASSERT_TRUE(bool(value));
  EXPECT_EQ(value->getAsObject()->size(), 1u);
  EXPECT_EQ(value->getAsObject()->getInteger("a"), 2);

  std::string header =
      R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("x":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
  EXPECT_EQ(errorOf(fileBytes(header, "abcd")),
            "W.safetensors: tensor 'x' appears twice in the header");
  // The same name spelled with an escape is still the same name.
  std::string escaped =
      R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("\u0078":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
  EXPECT_EQ(errorOf(fileBytes(escaped, "abcd")),
            "W.safetensors: tensor 'x' appears twice in the header");
  EXPECT_EQ(errorOf(fileBytes(R"({"__metadata__":{},"__metadata__":{}})")),
            "W.safetensors: \"__metadata__\" appears twice in the header");
}

TEST(SafetensorsCorrupt, BadMetadata) {
  EXPECT_EQ(errorOf(fileBytes(R"({"__metadata__":["a"]})")),
            "W.safetensors: \"__metadata__\" must be an object of strings, got "
            "[\"a\"]");
  EXPECT_EQ(errorOf(fileBytes(R"({"__metadata__":{"step":3}})")),
            "W.safetensors: \"__metadata__\" entry 'step' is 3, expected a "
            "string");
}

TEST(SafetensorsCorrupt, TensorNotAnObject) {
  EXPECT_EQ(errorOf(fileBytes(R"({"x":[1,2]})")),
            "W.safetensors: tensor 'x': expected an object with dtype, shape "
            "and data_offsets, got [1,2]");
}

TEST(SafetensorsCorrupt, MissingFields) {
  EXPECT_EQ(
      errorOf(fileBytes(R"({"x":{"shape":[],"data_offsets":[0,4]}})", "abcd")),
      "W.safetensors: tensor 'x': missing \"dtype\"");
  EXPECT_EQ(errorOf(fileBytes(R"({"x":{"dtype":"F32","data_offsets":[0,4]}})",
                              "abcd")),
            "W.safetensors: tensor 'x': missing \"shape\"");
  EXPECT_EQ(errorOf(fileBytes(R"({"x":{"dtype":"F32","shape":[]}})", "abcd")),
            "W.safetensors: tensor 'x': missing \"data_offsets\"");
}

TEST(SafetensorsCorrupt, UnknownDType) {
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F31")", "[1]", "[0, 4]"), "abcd")),
            "W.safetensors: tensor 'x': unknown dtype \"F31\"");
  EXPECT_EQ(errorOf(fileBytes(oneTensor("32", "[1]", "[0, 4]"), "abcd")),
            "W.safetensors: tensor 'x': dtype is 32, expected a string");
}

TEST(SafetensorsCorrupt, BadShape) {
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[2, -2]", "[0, 16]"),
                              std::string(16, '\0'))),
            "W.safetensors: tensor 'x': shape[1] is -2, expected a "
            "non-negative integer");
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[2.0]", "[0, 8]"),
                              std::string(8, '\0'))),
            "W.safetensors: tensor 'x': shape[0] is 2.0, expected a "
            "non-negative integer");
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "4", "[0, 16]"),
                              std::string(16, '\0'))),
            "W.safetensors: tensor 'x': shape is 4, expected a list of "
            "non-negative integers");
  EXPECT_EQ(errorOf(fileBytes(
                oneTensor(R"("F32")", "[4294967296, 4294967296]", "[0, 0]"))),
            "W.safetensors: tensor 'x': shape [4294967296, 4294967296] of F32 "
            "is too large");
}

TEST(SafetensorsCorrupt, BadOffsets) {
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[1]", "[0]"), "abcd")),
            "W.safetensors: tensor 'x': data_offsets is [0], expected [begin, "
            "end] with non-negative integers");
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[1]", "[-4, 0]"), "abcd")),
            "W.safetensors: tensor 'x': data_offsets is [-4,0], expected "
            "[begin, end] with non-negative integers");
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[1]", "[8, 4]"),
                              std::string(8, '\0'))),
            "W.safetensors: tensor 'x': data_offsets [8, 4] end before they "
            "begin");
}

TEST(SafetensorsCorrupt, OffsetsDoNotMatchShape) {
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("F32")", "[2, 2]", "[0, 12]"),
                              std::string(12, '\0'))),
            "W.safetensors: tensor 'x': data_offsets [0, 12] do not match "
            "shape [2, 2] of F32 (16 bytes)");
}

TEST(SafetensorsCorrupt, OffsetsOutOfRange) {
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("U8")", "[4]", "[4, 8]"),
                              std::string(6, '\0'))),
            "W.safetensors: tensor 'x': data_offsets [4, 8] exceed the data "
            "section (6 bytes)");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  std::string header =
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})";
  EXPECT_EQ(errorOf(fileBytes(header, std::string(24, '\0'))),
            "W.safetensors: tensors 'a' [0, 16] and 'b' [8, 24] overlap");
  // Two names for the same bytes.
  std::string aliased =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  EXPECT_EQ(errorOf(fileBytes(aliased, "abcd")),
            "W.safetensors: tensors 'a' [0, 4] and 'b' [0, 4] overlap");
}

TEST(SafetensorsCorrupt, GapsAndTrailingBytes) {
  std::string gap = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                    R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
  EXPECT_EQ(errorOf(fileBytes(gap, "abcdef")),
            "W.safetensors: data section bytes [2, 4) belong to no tensor");
  EXPECT_EQ(errorOf(fileBytes(oneTensor(R"("U8")", "[2]", "[0, 2]"), "abcd")),
            "W.safetensors: data section bytes [2, 4) belong to no tensor");
  EXPECT_EQ(errorOf(fileBytes("{}", "x")),
            "W.safetensors: data section bytes [0, 1) belong to no tensor");
}

TEST(SafetensorsCorrupt, NoInputCrashes) {
  // Every prefix of a valid file, and every single-byte change to its size
  // field and header, is either accepted or rejected with a message.
  SafetensorsWriter writer;
  std::vector<float> values = {1, 2, 3};
  ASSERT_OK(writer.add("w", {3}, values));
  ASSERT_OK(writer.add("v", DType::U8, {2}, {'a', 'b'}));
  writer.setMetadata("step", "1");
  std::string valid = fileBytes(writer.header(), "");
  valid += std::string(reinterpret_cast<const char *>(values.data()), 12);
  valid += "ab";
  ASSERT_EQ(errorOf(valid), "<accepted>");
  for (size_t length = 0; length < valid.size(); ++length)
    EXPECT_NE(errorOf(valid.substr(0, length)), "<accepted>") << length;
  size_t headerEnd = 8 + writer.header().size();
  for (size_t at = 0; at < headerEnd; ++at) {
    for (char replacement : {'\0', '"', '{', '}', '[', '9', '-', ' '}) {
      std::string mutated = valid;
      mutated[at] = replacement;
      std::string message = errorOf(mutated);
      EXPECT_FALSE(message.empty());
    }
  }
}

} // namespace

namespace {

// momarun's checkpoints carry each tensor's checksum (kChecksumsKey);
// reading verifies it, so a flipped byte in the data is an error naming the
// file and the tensor, not a silent wrong number.
TEST_F(SafetensorsFiles, ChecksumsCatchEditedData) {
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  SafetensorsWriter writer;
  ASSERT_OK(writer.add("a", {4}, a));
  ASSERT_OK(writer.add("b", {2}, b));
  writer.setChecksums();
  std::string path = pathOf("sums.safetensors");
  ASSERT_OK(writer.write(path));
  {
    llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
    ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
    EXPECT_TRUE(file->hasChecksums());
    llvm::Expected<std::vector<float>> read = file->readFloats("a");
    ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
    EXPECT_EQ(*read, a);
  }
  // Flip one byte of b's data (the file's last 8 bytes).
  auto buffer = llvm::MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(buffer));
  std::string bytes = (*buffer)->getBuffer().str();
  bytes[bytes.size() - 3] ^= 0x40;
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(path, ec);
    ASSERT_FALSE(ec);
    out << bytes;
  }
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
  EXPECT_TRUE(bool(file->readFloats("a")));
  llvm::Expected<std::vector<float>> edited = file->readFloats("b");
  ASSERT_FALSE(bool(edited));
  EXPECT_THAT(llvm::toString(edited.takeError()),
              ::testing::AllOf(::testing::HasSubstr(path + ": tensor 'b': its "
                                                           "data does not "
                                                           "match its "
                                                           "checksum"),
                               ::testing::HasSubstr("corrupted or was edited")));
}

TEST(Safetensors, MalformedChecksumsAreRefused) {
  std::string data(16, '\0');
  std::string header =
      R"({"__metadata__":{"xxh3":"{\"x\":\"12\"}"},"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_THAT(errorOf(fileBytes(header, data)),
              ::testing::HasSubstr("the checksum of 'x' is not 16 hex digits"));
}

} // namespace
