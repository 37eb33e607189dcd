//===- Safetensors.cpp - Reading and writing safetensors files ------------===//
//
// The reader trusts nothing in the file: every size is checked against the
// bytes that are really there before it is used, arithmetic on sizes is
// overflow-checked, and the first problem found becomes the error. The writer
// follows the reference implementation's layout byte for byte (compact JSON,
// "__metadata__" first, tensors widest dtype first then by name, header
// padded with spaces to 8 bytes).
//
//===----------------------------------------------------------------------===//

#include "lib/safetensors/Safetensors.h"

#include "lib/support/AtomicFile.h"
#include "lib/support/Failpoint.h"
#include "lib/support/Json.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace momac;

namespace {

/// The reference implementation refuses larger headers; so do we, so that a
/// corrupt size field cannot make us parse gigabytes of tensor data as JSON.
constexpr uint64_t kMaxHeaderSize = 100'000'000;
constexpr llvm::StringLiteral kMetadataKey = "__metadata__";

struct DTypeEntry {
  DType dtype;
  llvm::StringLiteral name;
  uint64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},           {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},       {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},         {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},         {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};

const DTypeEntry &entryOf(DType dtype) {
  for (const DTypeEntry &entry : kDTypes)
    if (entry.dtype == dtype)
      return entry;
  llvm_unreachable("every DType has an entry");
}

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// A JSON value as it appears in a message, cut short if long. A number
/// that was written with a fraction keeps one, so that "shape[0] is 2.0"
/// says why 2.0 is refused.
std::string describe(const llvm::json::Value &value) {
  std::string text = llvm::formatv("{0}", value).str();
  if (value.kind() == llvm::json::Value::Number && !value.getAsUINT64() &&
      !(value.getAsInteger() && *value.getAsInteger() < 0) &&
      text.find_first_of(".eEn") == std::string::npos)
    text += ".0";
  return text.size() > 40 ? text.substr(0, 37) + "..." : text;
}

/// product(shape) * elementSize, or std::nullopt on overflow.
std::optional<uint64_t> byteCount(llvm::ArrayRef<int64_t> shape,
                                  uint64_t elementSize) {
  uint64_t total = elementSize;
  for (int64_t dim : shape) {
    bool overflow = false;
    total = llvm::SaturatingMultiply(total, uint64_t(dim), &overflow);
    if (overflow)
      return std::nullopt;
  }
  return total;
}

/// The keys of the top-level object of `json`, in the order written, decoded.
/// llvm::json::Object is a hash map that forgets the order and keeps only the
/// last of duplicate keys, so the header text is scanned once more. `json`
/// must already have parsed as an object, which keeps this scanner simple.
std::vector<std::string> topLevelKeys(llvm::StringRef json) {
  std::vector<std::string> keys;
  int depth = 0;
  bool expectKey = false;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (c == '"') {
      size_t start = i++;
      while (i < json.size() && json[i] != '"')
        i += json[i] == '\\' ? 2 : 1;
      if (depth == 1 && expectKey) {
        llvm::Expected<llvm::json::Value> key =
            llvm::json::parse(json.slice(start, i + 1));
        if (key && key->getAsString())
          keys.push_back(key->getAsString()->str());
        else
          llvm::consumeError(key.takeError());
      }
      expectKey = false;
    } else if (c == '{' || c == '[') {
      ++depth;
      expectKey = depth == 1;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expectKey = true;
    }
  }
  return keys;
}

/// A JSON number that is an integer in [0, INT64_MAX]; doubles such as 2.0
/// are refused, as the reference implementation refuses them.
std::optional<uint64_t> asCount(const llvm::json::Value &value) {
  std::optional<uint64_t> number = value.getAsUINT64();
  if (!number || *number > uint64_t(INT64_MAX))
    return std::nullopt;
  return number;
}

std::string validUTF8(llvm::StringRef text) {
  return llvm::json::isUTF8(text) ? text.str() : llvm::json::fixUTF8(text);
}

float halfToFloat(uint16_t half) {
  uint32_t sign = uint32_t(half & 0x8000) << 16;
  uint32_t exponent = (half >> 10) & 0x1f;
  uint32_t mantissa = half & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // A subnormal half is a normal float: shift until the leading one moves
    // into the implicit bit.
    int shift = 0;
    while (!(mantissa & 0x400)) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | uint32_t(113 - shift) << 23 | ((mantissa & 0x3ff) << 13);
  }
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

/// A checksum as the metadata writes it: 16 lowercase hex digits.
std::string checksumText(uint64_t hash) {
  return llvm::utohexstr(hash, /*LowerCase=*/true, /*Width=*/16);
}

} // namespace

llvm::Error SafetensorsFile::parseChecksums(llvm::StringRef text) {
  llvm::Expected<llvm::json::Value> parsed = parseJson(text);
  if (!parsed)
    return makeError("\"__metadata__\" entry 'xxh3': " +
                     llvm::toString(parsed.takeError()));
  const llvm::json::Object *sums = parsed->getAsObject();
  if (!sums)
    return makeError("\"__metadata__\" entry 'xxh3' must be an object of "
                     "checksums by tensor name");
  for (const auto &[name, value] : *sums) {
    std::optional<llvm::StringRef> hex = value.getAsString();
    uint64_t hash = 0;
    if (!hex || hex->size() != 16 || hex->getAsInteger(16, hash))
      return makeError("\"__metadata__\" entry 'xxh3': the checksum of '" +
                       name.str() + "' is not 16 hex digits");
    checksums[name.str()] = hash;
  }
  return llvm::Error::success();
}

llvm::Error SafetensorsFile::verifyChecksum(const TensorInfo &tensor) const {
  if (checksums.empty())
    return llvm::Error::success();
  auto wanted = checksums.find(tensor.name);
  if (wanted == checksums.end())
    return makeError(path() + ": tensor '" + tensor.name +
                     "' has no checksum in a checksummed file");
  llvm::ArrayRef<char> bytes = data(tensor);
  uint64_t hash = llvm::xxh3_64bits(llvm::ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()));
  if (hash != wanted->second)
    return makeError(path() + ": tensor '" + tensor.name +
                     "': its data does not match its checksum (xxh3 " +
                     checksumText(hash) + ", recorded " +
                     checksumText(wanted->second) +
                     "): the file is corrupted or was edited");
  return llvm::Error::success();
}

llvm::StringRef momac::dtypeName(DType dtype) { return entryOf(dtype).name; }

std::optional<DType> momac::parseDType(llvm::StringRef name) {
  for (const DTypeEntry &entry : kDTypes)
    if (entry.name == name)
      return entry.dtype;
  return std::nullopt;
}

uint64_t momac::dtypeSize(DType dtype) { return entryOf(dtype).size; }

uint64_t TensorInfo::numElements() const {
  uint64_t count = 1;
  for (int64_t dim : shape)
    count *= uint64_t(dim);
  return count;
}

std::string momac::formatShape(llvm::ArrayRef<int64_t> shape) {
  return "[" +
         llvm::join(llvm::map_range(
                        shape, [](int64_t dim) { return std::to_string(dim); }),
                    ", ") +
         "]";
}

//===----------------------------------------------------------------------===//
// Reading
//===----------------------------------------------------------------------===//

llvm::Expected<SafetensorsFile> SafetensorsFile::open(llvm::StringRef path) {
  // Without RequiresNullTerminator=false, a file whose size is a multiple of
  // the page size would be copied into memory rather than mapped.
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer)
    return llvm::createStringError(
        buffer.getError(),
        path + ": cannot read: " + buffer.getError().message());
  return fromBuffer(std::move(*buffer));
}

llvm::Expected<SafetensorsFile>
SafetensorsFile::fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer) {
  std::string fileName = buffer->getBufferIdentifier().str();
  auto fail = [&](const llvm::Twine &message) {
    return makeError(fileName + ": " + message);
  };
  llvm::StringRef bytes = buffer->getBuffer();
  if (bytes.size() < 8)
    return fail(llvm::formatv("file is {0} bytes, too short for the 8-byte "
                              "header size",
                              bytes.size()));
  uint64_t headerSize = llvm::support::endian::read64le(
      reinterpret_cast<const uint8_t *>(bytes.data()));
  uint64_t afterSize = bytes.size() - 8;
  if (headerSize > afterSize)
    return fail(llvm::formatv("header size {0} exceeds the {1} bytes after the "
                              "size field (truncated or not a safetensors "
                              "file)",
                              headerSize, afterSize));
  if (headerSize > kMaxHeaderSize)
    return fail(llvm::formatv("header size {0} exceeds the limit of {1} bytes",
                              headerSize, kMaxHeaderSize));
  llvm::StringRef header = bytes.substr(8, headerSize);
  if (header.empty())
    return fail("header is empty");
  // The reference insists on '{' first, which also rules out headers that
  // are some other kind of JSON value.
  if (header.front() != '{')
    return fail(llvm::formatv("header must be a JSON object, but it starts "
                              "with '{0}'",
                              llvm::StringRef(header.data(), 1)));
  llvm::Expected<llvm::json::Value> parsed = parseJson(header);
  if (!parsed)
    return fail("header: " + llvm::toString(parsed.takeError()));
  const llvm::json::Object *root = parsed->getAsObject();
  if (!root)
    return fail("header must be a JSON object");

  SafetensorsFile file;
  file.dataStart = 8 + headerSize;
  uint64_t dataSize = afterSize - headerSize;

  llvm::StringSet<> seen;
  for (const std::string &key : topLevelKeys(header)) {
    if (!seen.insert(key).second)
      return fail(key == kMetadataKey
                      ? std::string("\"__metadata__\" appears twice in the "
                                    "header")
                      : "tensor '" + key + "' appears twice in the header");
    const llvm::json::Value *valuePtr = root->get(key);
    if (!valuePtr)
      return fail("cannot read the header's keys");
    const llvm::json::Value &value = *valuePtr;

    if (key == kMetadataKey) {
      const llvm::json::Object *metadata = value.getAsObject();
      if (!metadata)
        return fail("\"__metadata__\" must be an object of strings, got " +
                    describe(value));
      for (const auto &[metaKey, metaValue] : *metadata) {
        std::optional<llvm::StringRef> text = metaValue.getAsString();
        if (!text)
          return fail("\"__metadata__\" entry '" + metaKey.str() + "' is " +
                      describe(metaValue) + ", expected a string");
        file.metadataMap[metaKey.str()] = text->str();
      }
      if (auto sums = file.getMetadata(kChecksumsKey))
        if (llvm::Error error = file.parseChecksums(*sums))
          return fail(llvm::toString(std::move(error)));
      continue;
    }

    auto tensorFail = [&](const llvm::Twine &message) {
      return fail("tensor '" + key + "': " + message);
    };
    const llvm::json::Object *info = value.getAsObject();
    if (!info)
      return tensorFail("expected an object with dtype, shape and "
                        "data_offsets, got " +
                        describe(value));
    TensorInfo tensor;
    tensor.name = key;

    const llvm::json::Value *dtypeValue = info->get("dtype");
    if (!dtypeValue)
      return tensorFail("missing \"dtype\"");
    std::optional<llvm::StringRef> dtypeText = dtypeValue->getAsString();
    if (!dtypeText)
      return tensorFail("dtype is " + describe(*dtypeValue) +
                        ", expected a string");
    std::optional<DType> dtype = parseDType(*dtypeText);
    if (!dtype)
      return tensorFail("unknown dtype " + describe(*dtypeValue));
    tensor.dtype = *dtype;

    const llvm::json::Value *shapeValue = info->get("shape");
    if (!shapeValue)
      return tensorFail("missing \"shape\"");
    const llvm::json::Array *shape = shapeValue->getAsArray();
    if (!shape)
      return tensorFail("shape is " + describe(*shapeValue) +
                        ", expected a list of non-negative integers");
    for (auto [index, dim] : llvm::enumerate(*shape)) {
      std::optional<uint64_t> size = asCount(dim);
      if (!size)
        return tensorFail(llvm::formatv("shape[{0}] is {1}, expected a "
                                        "non-negative integer",
                                        index, describe(dim)));
      tensor.shape.push_back(int64_t(*size));
    }

    const llvm::json::Value *offsetsValue = info->get("data_offsets");
    if (!offsetsValue)
      return tensorFail("missing \"data_offsets\"");
    const llvm::json::Array *offsets = offsetsValue->getAsArray();
    std::optional<uint64_t> begin, end;
    if (offsets && offsets->size() == 2) {
      begin = asCount((*offsets)[0]);
      end = asCount((*offsets)[1]);
    }
    if (!begin || !end)
      return tensorFail("data_offsets is " + describe(*offsetsValue) +
                        ", expected [begin, end] with non-negative integers");
    tensor.begin = *begin;
    tensor.end = *end;
    std::string offsetsText = llvm::formatv("[{0}, {1}]", *begin, *end).str();
    if (*begin > *end)
      return tensorFail("data_offsets " + offsetsText +
                        " end before they "
                        "begin");

    std::optional<uint64_t> expectedBytes =
        byteCount(tensor.shape, dtypeSize(tensor.dtype));
    if (!expectedBytes)
      return tensorFail("shape " + formatShape(tensor.shape) + " of " +
                        dtypeName(tensor.dtype) + " is too large");
    if (tensor.numBytes() != *expectedBytes)
      return tensorFail(llvm::formatv("data_offsets {0} do not match shape {1} "
                                      "of {2} ({3} bytes)",
                                      offsetsText, formatShape(tensor.shape),
                                      dtypeName(tensor.dtype), *expectedBytes));
    if (*end > dataSize)
      return tensorFail(llvm::formatv("data_offsets {0} exceed the data "
                                      "section ({1} bytes)",
                                      offsetsText, dataSize));

    file.indexByName[key] = file.tensorList.size();
    file.tensorList.push_back(std::move(tensor));
  }

  // Every key must have been seen by the scan; anything else would be a
  // tensor silently dropped.
  if (seen.size() != root->size())
    return fail("cannot read the header's keys");

  // The tensors must tile the data section: the reference rejects gaps and
  // trailing bytes too, and an overlap would let a write to one tensor's
  // copy show up in another.
  std::vector<const TensorInfo *> byOffset;
  for (const TensorInfo &tensor : file.tensorList)
    byOffset.push_back(&tensor);
  llvm::stable_sort(byOffset, [](const TensorInfo *a, const TensorInfo *b) {
    return std::make_pair(a->begin, a->end) < std::make_pair(b->begin, b->end);
  });
  uint64_t covered = 0;
  const TensorInfo *last = nullptr;
  for (const TensorInfo *tensor : byOffset) {
    if (tensor->begin < covered)
      return fail(llvm::formatv("tensors '{0}' [{1}, {2}] and '{3}' [{4}, {5}] "
                                "overlap",
                                last->name, last->begin, last->end,
                                tensor->name, tensor->begin, tensor->end));
    if (tensor->begin > covered)
      return fail(llvm::formatv("data section bytes [{0}, {1}) belong to no "
                                "tensor",
                                covered, tensor->begin));
    covered = tensor->end;
    last = tensor;
  }
  if (covered != dataSize)
    return fail(llvm::formatv("data section bytes [{0}, {1}) belong to no "
                              "tensor",
                              covered, dataSize));

  file.buffer = std::move(buffer);
  return file;
}

std::vector<llvm::StringRef> SafetensorsFile::names() const {
  std::vector<llvm::StringRef> result;
  for (const TensorInfo &tensor : tensorList)
    result.push_back(tensor.name);
  return result;
}

const TensorInfo *SafetensorsFile::find(llvm::StringRef name) const {
  auto it = indexByName.find(name);
  return it == indexByName.end() ? nullptr : &tensorList[it->second];
}

llvm::ArrayRef<char> SafetensorsFile::data(const TensorInfo &tensor) const {
  return llvm::ArrayRef<char>(
      buffer->getBufferStart() + dataStart + tensor.begin, tensor.numBytes());
}

llvm::Expected<std::vector<float>>
SafetensorsFile::readFloats(llvm::StringRef name) const {
  const TensorInfo *tensor = find(name);
  if (!tensor)
    return makeError(path() + ": no tensor '" + name + "'");
  if (llvm::Error error = verifyChecksum(*tensor))
    return std::move(error);
  llvm::ArrayRef<char> bytes = data(*tensor);
  std::vector<float> values(tensor->numElements());
  switch (tensor->dtype) {
  case DType::F32:
    if (!values.empty())
      std::memcpy(values.data(), bytes.data(), bytes.size());
    return values;
  case DType::F16:
  case DType::BF16:
    for (size_t i = 0; i < values.size(); ++i) {
      uint16_t bits = llvm::support::endian::read16le(bytes.data() + 2 * i);
      if (tensor->dtype == DType::F16) {
        values[i] = halfToFloat(bits);
      } else {
        uint32_t wide = uint32_t(bits) << 16;
        std::memcpy(&values[i], &wide, sizeof(float));
      }
    }
    return values;
  case DType::F64:
    for (size_t i = 0; i < values.size(); ++i) {
      double value;
      std::memcpy(&value, bytes.data() + 8 * i, sizeof(value));
      values[i] = float(value);
    }
    return values;
  default:
    return makeError(path() + ": tensor '" + name + "' is " +
                     dtypeName(tensor->dtype) +
                     ", expected a floating-point dtype (F32, F16, BF16 or "
                     "F64)");
  }
}

std::optional<llvm::StringRef>
SafetensorsFile::getMetadata(llvm::StringRef key) const {
  auto it = metadataMap.find(key.str());
  if (it == metadataMap.end())
    return std::nullopt;
  return llvm::StringRef(it->second);
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

llvm::Error SafetensorsWriter::check(llvm::StringRef name, DType dtype,
                                     llvm::ArrayRef<int64_t> shape,
                                     size_t numBytes) const {
  auto fail = [&](const llvm::Twine &message) {
    return makeError("cannot add tensor '" + name + "': " + message);
  };
  if (name == kMetadataKey)
    return fail("the name is reserved for the metadata");
  if (!llvm::json::isUTF8(name))
    return fail("the name is not valid UTF-8");
  if (indexByName.count(name))
    return fail("a tensor of that name was already added");
  if (llvm::any_of(shape, [](int64_t dim) { return dim < 0; }))
    return fail("shape " + formatShape(shape) + " has a negative dimension");
  std::optional<uint64_t> expected = byteCount(shape, dtypeSize(dtype));
  if (!expected)
    return fail("shape " + formatShape(shape) + " of " + dtypeName(dtype) +
                " is too large");
  if (*expected != numBytes)
    return fail(llvm::formatv("{0} bytes do not match shape {1} of {2} ({3} "
                              "bytes)",
                              numBytes, formatShape(shape), dtypeName(dtype),
                              *expected));
  return llvm::Error::success();
}

llvm::Error SafetensorsWriter::add(llvm::StringRef name, DType dtype,
                                   llvm::ArrayRef<int64_t> shape,
                                   llvm::ArrayRef<char> bytes) {
  if (llvm::Error error = check(name, dtype, shape, bytes.size()))
    return error;
  auto entry = std::make_unique<Entry>();
  entry->name = name.str();
  entry->dtype = dtype;
  entry->shape = shape.vec();
  entry->storage.assign(bytes.begin(), bytes.end());
  entry->bytes = entry->storage;
  indexByName[name] = entries.size();
  entries.push_back(std::move(entry));
  return llvm::Error::success();
}

llvm::Error SafetensorsWriter::add(llvm::StringRef name,
                                   llvm::ArrayRef<int64_t> shape,
                                   llvm::ArrayRef<float> values) {
  // Floats are stored as their in-memory bytes: momac only targets
  // little-endian hosts, as does the format.
  return add(name, DType::F32, shape,
             llvm::ArrayRef<char>(reinterpret_cast<const char *>(values.data()),
                                  values.size() * sizeof(float)));
}

llvm::Error SafetensorsWriter::addBorrowed(llvm::StringRef name, DType dtype,
                                           llvm::ArrayRef<int64_t> shape,
                                           llvm::ArrayRef<char> bytes) {
  if (llvm::Error error = check(name, dtype, shape, bytes.size()))
    return error;
  auto entry = std::make_unique<Entry>();
  entry->name = name.str();
  entry->dtype = dtype;
  entry->shape = shape.vec();
  entry->bytes = bytes;
  indexByName[name] = entries.size();
  entries.push_back(std::move(entry));
  return llvm::Error::success();
}

void SafetensorsWriter::setMetadata(llvm::StringRef key,
                                    llvm::StringRef value) {
  metadataMap[key.str()] = value.str();
}

std::vector<const SafetensorsWriter::Entry *>
SafetensorsWriter::layout() const {
  std::vector<const Entry *> order;
  for (const auto &entry : entries)
    order.push_back(entry.get());
  // The reference's order: DType declaration order descending, then name.
  llvm::sort(order, [](const Entry *a, const Entry *b) {
    if (a->dtype != b->dtype)
      return a->dtype > b->dtype;
    return a->name < b->name;
  });
  return order;
}

std::string SafetensorsWriter::header() const {
  std::map<std::string, std::string> metadata = metadataMap;
  if (withChecksums) {
    llvm::json::Object sums;
    for (const Entry *entry : layout())
      sums[entry->name] = checksumText(llvm::xxh3_64bits(llvm::ArrayRef<uint8_t>(
          reinterpret_cast<const uint8_t *>(entry->bytes.data()),
          entry->bytes.size())));
    metadata[kChecksumsKey.str()] =
        llvm::formatv("{0}", llvm::json::Value(std::move(sums))).str();
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::json::OStream json(os);
  json.object([&] {
    if (!metadata.empty())
      json.attributeObject(kMetadataKey, [&] {
        // write() refuses invalid UTF-8; here it is only kept from
        // tripping llvm::json's assertion.
        for (const auto &[key, value] : metadata)
          json.attribute(validUTF8(key), validUTF8(value));
      });
    uint64_t offset = 0;
    for (const Entry *entry : layout()) {
      json.attributeObject(entry->name, [&] {
        json.attribute("dtype", dtypeName(entry->dtype));
        json.attributeArray("shape", [&] {
          for (int64_t dim : entry->shape)
            json.value(dim);
        });
        json.attributeArray("data_offsets", [&] {
          json.value(offset);
          json.value(offset + entry->bytes.size());
        });
      });
      offset += entry->bytes.size();
    }
  });
  os.flush();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

llvm::Error SafetensorsWriter::write(llvm::StringRef path) const {
  auto fail = [&](const llvm::Twine &message) {
    return makeError(path + ": " + message);
  };
  for (const auto &[key, value] : metadataMap)
    if (!llvm::json::isUTF8(key) || !llvm::json::isUTF8(value))
      return fail("metadata entry '" + key + "' is not valid UTF-8");
  std::string head = header();

  // A fresh file beside the target, renamed over it when complete
  // (lib/support/AtomicFile.h: only regular files are replaced).
  llvm::Expected<TempFile> temp = createTempBeside(path);
  if (!temp)
    return temp.takeError();
  {
    llvm::raw_fd_ostream os(temp->fd, /*shouldClose=*/false);
    char size[8];
    llvm::support::endian::write64le(size, head.size());
    os.write(size, sizeof(size));
    os << head;
    std::vector<const Entry *> order = layout();
    for (auto [i, entry] : llvm::enumerate(order)) {
      if (i == order.size() / 2) {
        os.flush();
        failpoint(failpoints::kMidDataWrite);
      }
      os.write(entry->bytes.data(), entry->bytes.size());
    }
    os.flush();
    if (os.has_error()) {
      std::string message = os.error().message();
      os.clear_error();
      discardTemp(*temp);
      return fail("cannot write: " + message);
    }
  }
  failpoint(failpoints::kBeforeRename);
  if (llvm::Error error = commitTemp(*temp))
    return error;
  return llvm::Error::success();
}
