//===- Manifest.cpp - The manifest of a compiled artifact -----------------===//

#include "lib/artifact/Manifest.h"

#include "lib/support/Json.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/xxhash.h"

using namespace momac;
using llvm::json::Array;
using llvm::json::Object;
using llvm::json::Value;

static int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t BufferSpec::numElements() const { return product(shape); }
int64_t ManifestParameter::numElements() const { return product(shape); }

const EntryPointSpec *Manifest::findEntryPoint(llvm::StringRef name) const {
  for (const EntryPointSpec &entry : entryPoints)
    if (entry.name == name)
      return &entry;
  return nullptr;
}

static Array shapeJSON(const std::vector<int64_t> &shape) {
  Array array;
  for (int64_t d : shape)
    array.push_back(d);
  return array;
}

static Value bufferJSON(const BufferSpec &spec) {
  Object object{{"name", spec.name},
                {"dtype", spec.dtype},
                {"shape", shapeJSON(spec.shape)}};
  if (spec.inPlace)
    object["in_place"] = true;
  if (spec.onHost)
    object["on_host"] = true;
  return object;
}

Value momac::toJSON(const ManifestParameter &p) {
  return Object{{"name", p.name},
                {"shape", shapeJSON(p.shape)},
                {"init", p.init},
                {"weight_decay", p.weightDecay},
                {"aux_router", p.auxRouter}};
}

Value momac::toJSON(const ManifestShardUnit &unit) {
  Array members;
  for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets))
    members.push_back(Object{{"name", name}, {"offset", offset}});
  return Object{{"name", unit.name},
                {"elements", unit.elements},
                {"parameters", std::move(members)}};
}

Value momac::toJSON(const Manifest &manifest) {
  Array parameters;
  for (const ManifestParameter &p : manifest.parameters)
    parameters.push_back(toJSON(p));
  Array entryPoints;
  for (const EntryPointSpec &entry : manifest.entryPoints) {
    Array arguments, results;
    for (const BufferSpec &spec : entry.arguments)
      arguments.push_back(bufferJSON(spec));
    for (const BufferSpec &spec : entry.results)
      results.push_back(bufferJSON(spec));
    entryPoints.push_back(Object{{"name", entry.name},
                                 {"symbol", entry.symbol},
                                 {"arguments", std::move(arguments)},
                                 {"results", std::move(results)}});
  }
  Object object{{"format", "momac-artifact"},
                {"version", Manifest::kVersion},
                {"target", manifest.target},
                {"model", manifest.model},
                {"library", manifest.library},
                {"description", manifest.description},
                {"batch_size", manifest.batchSize},
                {"seq_len", manifest.seqLen},
                {"vocab_size", manifest.vocabSize},
                {"parameters", std::move(parameters)},
                {"entry_points", std::move(entryPoints)}};
  if (!manifest.shardUnits.empty()) {
    Array units;
    for (const ManifestShardUnit &unit : manifest.shardUnits)
      units.push_back(toJSON(unit));
    object["fsdp"] = Object{
        {"layout", "each unit's parameters at their offsets in one flat f32 "
                   "buffer; R ranks hold R contiguous shards of "
                   "ceil(elements / R) elements rounded up to 16, the last "
                   "zero-padded"},
        {"chunk_elements", manifest.shardChunkElements},
        {"units", std::move(units)}};
  }
  if (!manifest.bf16Gemm.empty())
    object["bf16_gemm"] = manifest.bf16Gemm;
  if (manifest.librarySize) {
    object["library_size"] = *manifest.librarySize;
    object["library_xxh3"] = manifest.libraryHash;
  }
  return object;
}

namespace momac {
// llvm::json::ObjectMapper hooks; errors carry the JSON path.
static bool fromJSON(const Value &value, BufferSpec &spec,
                     llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  return mapper && mapper.map("name", spec.name) &&
         mapper.map("dtype", spec.dtype) && mapper.map("shape", spec.shape) &&
         mapper.mapOptional("in_place", spec.inPlace) &&
         mapper.mapOptional("on_host", spec.onHost);
}
static bool fromJSON(const Value &value, EntryPointSpec &entry,
                     llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  return mapper && mapper.map("name", entry.name) &&
         mapper.map("symbol", entry.symbol) &&
         mapper.map("arguments", entry.arguments) &&
         mapper.map("results", entry.results);
}
bool fromJSON(const Value &value, ManifestParameter &param,
              llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  return mapper && mapper.map("name", param.name) &&
         mapper.map("shape", param.shape) && mapper.map("init", param.init) &&
         mapper.map("weight_decay", param.weightDecay) &&
         mapper.map("aux_router", param.auxRouter);
}
bool fromJSON(const Value &value, ManifestShardUnit &unit,
              llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  const llvm::json::Array *members =
      value.getAsObject() ? value.getAsObject()->getArray("parameters")
                          : nullptr;
  if (!mapper || !mapper.map("name", unit.name) ||
      !mapper.map("elements", unit.elements))
    return false;
  if (!members) {
    path.field("parameters").report("expected an array");
    return false;
  }
  for (auto [i, member] : llvm::enumerate(*members)) {
    llvm::json::ObjectMapper memberMapper(member, path.field("parameters").index(i));
    std::string name;
    int64_t offset = 0;
    if (!memberMapper || !memberMapper.map("name", name) ||
        !memberMapper.map("offset", offset))
      return false;
    unit.parameters.push_back(name);
    unit.offsets.push_back(offset);
  }
  return true;
}
static bool mapFsdp(const Value &value, Manifest &manifest,
                    llvm::json::Path path) {
  const Value *fsdp = value.getAsObject()->get("fsdp");
  if (!fsdp)
    return true;
  llvm::json::ObjectMapper mapper(*fsdp, path.field("fsdp"));
  return mapper && mapper.map("chunk_elements", manifest.shardChunkElements) &&
         mapper.map("units", manifest.shardUnits);
}
static bool fromJSON(const Value &value, Manifest &manifest,
                     llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  std::string format;
  int64_t version = 0;
  if (!mapper || !mapper.map("format", format) ||
      !mapper.map("version", version))
    return false;
  if (format != "momac-artifact") {
    path.field("format").report("expected \"momac-artifact\"");
    return false;
  }
  if (version != Manifest::kVersion) {
    path.field("version").report("unsupported manifest version");
    return false;
  }
  if (!mapper.map("target", manifest.target))
    return false;
  if (!llvm::is_contained(Manifest::kTargets, manifest.target)) {
    path.field("target").report(
        "an artifact for a target momarun does not run (it runs \"cpu\", "
        "\"cuda\" and \"cuda-emulated\" artifacts)");
    return false;
  }
  return mapper.map("model", manifest.model) &&
         mapper.map("library", manifest.library) &&
         mapper.mapOptional("library_size", manifest.librarySize) &&
         mapper.mapOptional("library_xxh3", manifest.libraryHash) &&
         mapper.map("description", manifest.description) &&
         mapper.mapOptional("bf16_gemm", manifest.bf16Gemm) &&
         mapper.map("batch_size", manifest.batchSize) &&
         mapper.map("seq_len", manifest.seqLen) &&
         mapper.map("vocab_size", manifest.vocabSize) &&
         mapper.map("parameters", manifest.parameters) &&
         mapper.map("entry_points", manifest.entryPoints) &&
         mapFsdp(value, manifest, path);
}
} // namespace momac

llvm::Expected<std::pair<int64_t, std::string>>
momac::fingerprintFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "%s: cannot read: %s",
                                   path.str().c_str(),
                                   buffer.getError().message().c_str());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  return std::make_pair(int64_t(bytes.size()),
                        llvm::utohexstr(llvm::xxh3_64bits(bytes),
                                        /*LowerCase=*/true, /*Width=*/16));
}

llvm::Expected<Manifest> momac::readManifest(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "%s: cannot read: %s",
                                   path.str().c_str(),
                                   buffer.getError().message().c_str());
  return parseManifest((*buffer)->getBuffer(), path);
}

llvm::Expected<Manifest> momac::parseManifest(llvm::StringRef text,
                                              llvm::StringRef name) {
  llvm::Expected<Value> json = parseJson(text);
  if (!json)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s: %s",
                                   name.str().c_str(),
                                   llvm::toString(json.takeError()).c_str());
  Manifest manifest;
  llvm::json::Path::Root root("manifest");
  if (!fromJSON(*json, manifest, root))
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "%s: %s",
                                   name.str().c_str(),
                                   llvm::toString(root.getError()).c_str());
  return manifest;
}
