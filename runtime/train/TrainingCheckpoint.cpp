//===- TrainingCheckpoint.cpp - A run's training state on disk ------------===//

#include "runtime/train/TrainingCheckpoint.h"

#include "lib/config/ShardUnits.h"
#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"
#include "lib/support/Failpoint.h"
#include "lib/support/Json.h"
#include "runtime/comm/Communicator.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/xxhash.h"

#include <functional>
#include <optional>
#include <sstream>

using namespace momac;

namespace {

/// More ranks than any run has: a bound on what a file may claim.
constexpr int64_t kMaxRanks = 1 << 20;

llvm::Error checkpointError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

std::string joinPath(llvm::StringRef directory, llvm::StringRef file) {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, file);
  return path.str().str();
}

std::string hex(uint64_t value) {
  return llvm::utohexstr(value, /*LowerCase=*/true, /*Width=*/16);
}

/// step, data_position, rng, model and global_batch of a checkpoint's
/// metadata, each checked: an error names the file and the field.
llvm::Error readProgress(const SafetensorsFile &file,
                         CheckpointProgress &state) {
  auto field = [&](llvm::StringRef key) -> llvm::Expected<llvm::StringRef> {
    if (auto value = file.getMetadata(key))
      return *value;
    return checkpointError(file.path() + ": metadata lacks " + key +
                           " (not a momarun checkpoint)");
  };
  llvm::Expected<llvm::StringRef> step = field("step");
  if (!step)
    return step.takeError();
  if (step->getAsInteger(10, state.step) || state.step < 0)
    return checkpointError(file.path() + ": metadata step is '" + *step +
                           "', expected a number of steps >= 0");
  llvm::Expected<llvm::StringRef> position = field("data_position");
  if (!position)
    return position.takeError();
  if (position->getAsInteger(10, state.dataPosition))
    return checkpointError(file.path() + ": metadata data_position is '" +
                           *position + "', expected a number of sequences "
                                       ">= 0");
  if (auto batch = file.getMetadata("global_batch"))
    if (batch->getAsInteger(10, state.globalBatch) || state.globalBatch < 1)
      return checkpointError(file.path() + ": metadata global_batch is '" +
                             *batch + "', expected sequences per step >= 1");
  state.rng = file.getMetadata("rng").value_or("none").str();
  state.model = file.getMetadata("model").value_or("").str();
  return llvm::Error::success();
}

void setProgressMetadata(SafetensorsWriter &writer,
                         const CheckpointProgress &progress) {
  writer.setMetadata("step", std::to_string(progress.step));
  writer.setMetadata("data_position", std::to_string(progress.dataPosition));
  writer.setMetadata("rng", progress.rng);
  writer.setMetadata("model", progress.model);
  if (progress.globalBatch > 0)
    writer.setMetadata("global_batch", std::to_string(progress.globalBatch));
  writer.setChecksums();
}

/// Adds `values` (owned by the caller until the write) as an F32 tensor.
llvm::Error addFloats(SafetensorsWriter &writer, const std::string &name,
                      llvm::ArrayRef<int64_t> shape,
                      llvm::ArrayRef<float> values) {
  return writer.addBorrowed(
      name, DType::F32, shape,
      llvm::ArrayRef<char>(reinterpret_cast<const char *>(values.data()),
                           values.size() * sizeof(float)));
}

llvm::Expected<TrainingState>
readSingle(llvm::StringRef path,
           const std::vector<ManifestParameter> &parameters,
           TakeParameter take) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  TrainingState state;
  state.parameters = parameters;
  state.source = path.str();
  if (llvm::Error error = readProgress(*file, state))
    return std::move(error);
  // (readFloats checks each tensor's checksum.)
  for (auto [i, param] : llvm::enumerate(parameters)) {
    llvm::Expected<std::vector<float>> values = file->readFloats(param.name);
    if (!values)
      return values.takeError();
    if (int64_t(values->size()) != param.numElements())
      return checkpointError(path + ": " + param.name + " has " +
                             llvm::Twine(values->size()) +
                             " values, the model's " +
                             llvm::Twine(param.numElements()));
    std::vector<float> m, v;
    if (!param.auxRouter) {
      for (auto [prefix, moment] :
           {std::pair{"optim.m.", &m}, std::pair{"optim.v.", &v}}) {
        auto read = file->readFloats(prefix + param.name);
        if (!read)
          return read.takeError();
        if (read->size() != values->size())
          return checkpointError(path + ": " + prefix + param.name +
                                 " has another size than " + param.name);
        *moment = std::move(*read);
      }
    }
    take(i, *values, m, v);
  }
  return state;
}

/// A shard set's layout, from the fsdp_layout metadata of its files
/// (writeShardCheckpoint): the parameters and units as the manifest
/// writes them, and the file's own place in the set.
struct ShardLayout {
  int64_t rank = -1, ranks = 0;
  std::vector<ManifestParameter> parameters;
  std::vector<ManifestShardUnit> units;
};

bool fromJSON(const llvm::json::Value &value, ShardLayout &layout,
              llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  return mapper && mapper.map("rank", layout.rank) &&
         mapper.map("world_size", layout.ranks) &&
         mapper.map("parameters", layout.parameters) &&
         mapper.map("units", layout.units);
}

/// The layout of a shard file, checked: its rank and rank count are those
/// of its place in the set, every parameter lies inside its unit, each
/// exactly once, and each unit's shards in the file have the size the rank
/// count gives.
llvm::Expected<ShardLayout> parseLayout(const SafetensorsFile &file, int rank,
                                        int ranks) {
  auto text = file.getMetadata("fsdp_layout");
  if (!text)
    return checkpointError(file.path() + ": no fsdp_layout metadata");
  llvm::Expected<llvm::json::Value> json = parseJson(*text);
  if (!json)
    return checkpointError(file.path() + ": fsdp_layout: " +
                           llvm::toString(json.takeError()));
  ShardLayout layout;
  llvm::json::Path::Root root("fsdp_layout");
  if (!fromJSON(*json, layout, root))
    return checkpointError(file.path() + ": " +
                           llvm::toString(root.getError()));
  auto bad = [&](const llvm::Twine &what) {
    return checkpointError(file.path() + ": fsdp_layout: " + what);
  };
  if (layout.rank != rank || layout.ranks != ranks)
    return bad(llvm::formatv("rank {0} of {1}, but the set has it as rank {2} "
                             "of {3} (a shard swapped or copied over "
                             "another)",
                             layout.rank, layout.ranks, rank, ranks));
  llvm::StringMap<const ManifestParameter *> parameters;
  for (const ManifestParameter &param : layout.parameters) {
    for (int64_t dim : param.shape)
      if (dim < 0)
        return bad("parameter " + param.name + " has a negative dimension");
    parameters[param.name] = &param;
  }
  llvm::StringMap<int> placed;
  for (const ManifestShardUnit &unit : layout.units) {
    if (unit.parameters.size() != unit.offsets.size())
      return bad("unit " + unit.name + " lists " +
                 llvm::Twine(unit.parameters.size()) + " parameters but " +
                 llvm::Twine(unit.offsets.size()) + " offsets");
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets)) {
      const ManifestParameter *param = parameters.lookup(name);
      if (!param)
        return bad("unit " + unit.name + " holds an unknown parameter " + name);
      if (offset < 0 || offset > unit.elements ||
          param->numElements() > unit.elements - offset)
        return bad(llvm::formatv("{0} at offset {1} does not fit in unit {2} "
                                 "of {3} elements",
                                 name, offset, unit.name, unit.elements));
      if (++placed[name] > 1)
        return bad("parameter " + name + " is in more than one unit");
    }
    // The shards of this unit in this file: the size the rank count gives,
    // checked before anything of that size is allocated.
    const int64_t shard = shardElements(unit.elements, ranks);
    for (const char *prefix : {"fsdp.", "fsdp.optim.m.", "fsdp.optim.v."}) {
      const TensorInfo *tensor = file.find(prefix + unit.name);
      if (!tensor)
        return checkpointError(file.path() + ": no tensor " + prefix +
                               unit.name);
      if (int64_t(tensor->numElements()) != shard)
        return checkpointError(llvm::formatv(
            "{0}: {1}{2} has {3} values, not a shard of unit {2} ({4} "
            "elements over {5} ranks: {6})",
            file.path(), prefix, unit.name, tensor->numElements(),
            unit.elements, ranks, shard));
    }
  }
  for (const ManifestParameter &param : layout.parameters)
    if (!placed.count(param.name))
      return bad("parameter " + param.name + " is in no unit");
  return layout;
}

constexpr const char *kShardPrefixes[3] = {"fsdp.", "fsdp.optim.m.",
                                           "fsdp.optim.v."};

/// The committed set, as RUN/checkpoint.shards.json names it.
struct ShardSet {
  int64_t step = 0;
  std::vector<ShardFile> files;
};

llvm::Expected<ShardSet> readShardSetManifest(llvm::StringRef runDirectory) {
  std::string path = shardSetPath(runDirectory);
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return checkpointError(path + ": " + buffer.getError().message());
  llvm::Expected<llvm::json::Value> json = parseJson((*buffer)->getBuffer());
  if (!json)
    return checkpointError(path + ": " + llvm::toString(json.takeError()));
  auto bad = [&](const llvm::Twine &what) {
    return checkpointError(path + ": " + what);
  };
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *files = root ? root->getArray("shards") : nullptr;
  std::optional<int64_t> step = root ? root->getInteger("step") : std::nullopt;
  if (!root || !files || !step)
    return bad("expected {\"step\": N, \"shards\": [...]}");
  if (*step < 0)
    return bad("step is " + llvm::Twine(*step) + ", expected >= 0");
  const int64_t ranks = int64_t(files->size());
  if (ranks < 1 || ranks > kMaxRanks)
    return bad("a set of " + llvm::Twine(ranks) + " shards");
  ShardSet set;
  set.step = *step;
  for (auto [r, value] : llvm::enumerate(*files)) {
    const llvm::json::Object *file = value.getAsObject();
    auto name = file ? file->getString("file") : std::nullopt;
    auto bytes = file ? file->getInteger("bytes") : std::nullopt;
    auto sum = file ? file->getString("xxh3") : std::nullopt;
    uint64_t hash = 0;
    if (!name || !bytes || *bytes < 0 || !sum || sum->size() != 16 ||
        sum->getAsInteger(16, hash))
      return bad(llvm::formatv("shards[{0}]: expected {{\"file\", \"bytes\" "
                               ">= 0, \"xxh3\" (16 hex digits)}",
                               r));
    std::string expected = llvm::sys::path::filename(shardCheckpointPath(
                                                         "", set.step, int(r),
                                                         int(ranks)))
                               .str();
    if (*name != expected)
      return bad(llvm::formatv("shards[{0}] is '{1}', expected '{2}' for rank "
                               "{0} of {3} at step {4}",
                               r, *name, expected, ranks, set.step));
    set.files.push_back({name->str(), uint64_t(*bytes), hash});
  }
  return set;
}

/// Checks a shard file against the set's record of it: its size, and its
/// bytes' checksum (a truncated, extended or edited file).
llvm::Error verifyShardFile(llvm::StringRef runDirectory,
                            const ShardFile &record) {
  std::string path = joinPath(runDirectory, record.name);
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return checkpointError(path + ": " + buffer.getError().message() +
                           " (named by " + shardSetPath(runDirectory) + ")");
  llvm::StringRef bytes = (*buffer)->getBuffer();
  if (bytes.size() != record.bytes)
    return checkpointError(llvm::formatv(
        "{0}: {1} bytes, but the shard set records {2}", path, bytes.size(),
        record.bytes));
  uint64_t hash = llvm::xxh3_64bits(bytes);
  if (hash != record.xxh3)
    return checkpointError(path + ": its checksum (xxh3 " + hex(hash) +
                           ") is not the shard set's (" + hex(record.xxh3) +
                           "): the file is corrupted or was replaced");
  return llvm::Error::success();
}

/// The set's files, opened and checked against the set and each other
/// (steps, data positions, rng and layouts equal), and their layout.
llvm::Expected<std::pair<std::vector<SafetensorsFile>, ShardLayout>>
openShardSet(llvm::StringRef runDirectory, const ShardSet &set,
             TrainingState &state) {
  const int ranks = int(set.files.size());
  std::vector<SafetensorsFile> files;
  std::optional<ShardLayout> layout;
  std::string layoutText;
  for (auto [r, record] : llvm::enumerate(set.files)) {
    if (llvm::Error error = verifyShardFile(runDirectory, record))
      return std::move(error);
    llvm::Expected<SafetensorsFile> file =
        SafetensorsFile::open(joinPath(runDirectory, record.name));
    if (!file)
      return file.takeError();
    CheckpointProgress progress;
    if (llvm::Error error = readProgress(*file, progress))
      return std::move(error);
    if (r == 0)
      static_cast<CheckpointProgress &>(state) = progress;
    auto differs = [&](llvm::StringRef field) {
      return checkpointError(file->path() + ": metadata " + field +
                             " differs from rank 0's (" + files[0].path() +
                             ")");
    };
    if (progress.step != set.step)
      return checkpointError(llvm::formatv(
          "{0}: metadata step is {1}, but the shard set is of step {2}",
          file->path(), progress.step, set.step));
    if (r > 0 && progress.dataPosition != state.dataPosition)
      return differs("data_position");
    if (r > 0 && progress.rng != state.rng)
      return differs("rng");
    llvm::Expected<ShardLayout> parsed = parseLayout(*file, int(r), ranks);
    if (!parsed)
      return parsed.takeError();
    std::string text = file->getMetadata("fsdp_layout")->str();
    // The same units and parameters in every file (the rank aside).
    ShardLayout mine = *parsed;
    if (r == 0) {
      layout = std::move(*parsed);
    } else if (mine.units.size() != layout->units.size() ||
               mine.parameters.size() != layout->parameters.size()) {
      return differs("fsdp_layout");
    }
    for (size_t u = 0; r > 0 && u < mine.units.size(); ++u)
      if (mine.units[u].name != layout->units[u].name ||
          mine.units[u].elements != layout->units[u].elements ||
          mine.units[u].offsets != layout->units[u].offsets)
        return differs("fsdp_layout");
    files.push_back(std::move(*file));
  }
  return std::make_pair(std::move(files), std::move(*layout));
}

llvm::Expected<TrainingState>
readShardSet(llvm::StringRef runDirectory, const ShardSet &set,
             const std::vector<ManifestParameter> &wanted,
             TakeParameter take) {
  const int ranks = int(set.files.size());
  TrainingState state;
  state.source = shardSetPath(runDirectory) + " (the shard set of step " +
                 std::to_string(set.step) + " on " + std::to_string(ranks) +
                 " ranks)";
  auto opened = openShardSet(runDirectory, set, state);
  if (!opened)
    return opened.takeError();
  auto &[files, layout] = *opened;

  // Where each wanted parameter lies (unit, offset), checked against the
  // stored layout before anything is read.
  llvm::StringMap<std::pair<size_t, int64_t>> placement;
  for (auto [u, unit] : llvm::enumerate(layout.units))
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets))
      placement[name] = {u, offset};
  state.parameters = wanted.empty() ? layout.parameters : wanted;
  llvm::StringMap<const ManifestParameter *> stored;
  for (const ManifestParameter &param : layout.parameters)
    stored[param.name] = &param;
  std::vector<std::vector<size_t>> parametersOfUnit(layout.units.size());
  for (auto [i, param] : llvm::enumerate(state.parameters)) {
    auto it = placement.find(param.name);
    const ManifestParameter *known = stored.lookup(param.name);
    if (it == placement.end() || !known)
      return checkpointError(state.source + ": no parameter " + param.name);
    if (known->shape != param.shape)
      return checkpointError(state.source + ": " + param.name +
                             " has another shape than the model's");
    parametersOfUnit[it->second.first].push_back(i);
  }

  // One unit at a time: its flat buffers, put back together from the
  // ranks' pieces (each checked against its checksum), then its
  // parameters' slices.
  for (auto [u, unit] : llvm::enumerate(layout.units)) {
    if (parametersOfUnit[u].empty())
      continue;
    const int64_t shard = shardElements(unit.elements, ranks);
    std::vector<float> flat[3];
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> &buffer = flat[kind];
      buffer.reserve(unit.elements);
      for (int r = 0; r < ranks; ++r) {
        auto piece = files[r].readFloats(kShardPrefixes[kind] + unit.name);
        if (!piece)
          return piece.takeError();
        size_t owned = Communicator::ownedElements(
            size_t(shard), size_t(unit.elements), r);
        buffer.insert(buffer.end(), piece->begin(), piece->begin() + owned);
      }
    }
    for (size_t i : parametersOfUnit[u]) {
      const ManifestParameter &param = state.parameters[i];
      int64_t offset = placement.lookup(param.name).second;
      int64_t n = param.numElements();
      auto slice = [&](int kind) {
        if (kind > 0 && param.auxRouter)
          return std::vector<float>();
        return std::vector<float>(flat[kind].begin() + offset,
                                  flat[kind].begin() + offset + n);
      };
      std::vector<float> weights = slice(0), m = slice(1), v = slice(2);
      take(i, weights, m, v);
    }
  }
  return std::move(state);
}

/// The names of the shard files in `runDirectory` (any set, committed or
/// not).
std::vector<std::string> shardFiles(llvm::StringRef runDirectory) {
  std::vector<std::string> names;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(runDirectory, ec), end;
       it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with("checkpoint.step-") && name.contains(".shard-") &&
        name.ends_with(".safetensors"))
      names.push_back(name.str());
  }
  return names;
}

} // namespace

std::string momac::singleCheckpointPath(llvm::StringRef runDirectory) {
  return joinPath(runDirectory, "checkpoint.safetensors");
}

std::string momac::shardCheckpointPath(llvm::StringRef runDirectory,
                                       int64_t step, int rank, int ranks) {
  return joinPath(runDirectory,
                  llvm::formatv("checkpoint.step-{0}.shard-{1}-of-{2}"
                                ".safetensors",
                                step, rank, ranks)
                      .str());
}

std::string momac::shardSetPath(llvm::StringRef runDirectory) {
  return joinPath(runDirectory, "checkpoint.shards.json");
}

llvm::Expected<TrainingState>
momac::readTrainingCheckpoint(llvm::StringRef runDirectory,
                              const std::vector<ManifestParameter> &parameters) {
  TrainingState whole;
  llvm::Expected<TrainingState> state = readTrainingCheckpointEach(
      runDirectory, parameters,
      [&](size_t i, std::vector<float> &weights, std::vector<float> &m,
          std::vector<float> &v) {
        if (whole.weights.size() <= i) {
          whole.weights.resize(i + 1);
          whole.firstMoments.resize(i + 1);
          whole.secondMoments.resize(i + 1);
        }
        whole.weights[i] = std::move(weights);
        whole.firstMoments[i] = std::move(m);
        whole.secondMoments[i] = std::move(v);
      });
  if (!state)
    return state.takeError();
  state->weights = std::move(whole.weights);
  state->firstMoments = std::move(whole.firstMoments);
  state->secondMoments = std::move(whole.secondMoments);
  return state;
}

llvm::Expected<TrainingState> momac::readTrainingCheckpointEach(
    llvm::StringRef runDirectory,
    const std::vector<ManifestParameter> &parameters, TakeParameter take) {
  // The forms present, newest first by their steps; only the newest
  // readable one is read whole (an older form exists only after a crash
  // between committing a new form and removing the old).
  struct Form {
    int64_t step;
    std::function<llvm::Expected<TrainingState>()> read;
  };
  std::vector<Form> forms;
  std::string failures;
  std::string single = singleCheckpointPath(runDirectory);
  if (llvm::sys::fs::exists(single)) {
    llvm::Expected<std::pair<uint64_t, int64_t>> progress =
        readDataPosition(single);
    if (parameters.empty())
      failures += "\n  " + single + ": a one-rank checkpoint is consolidated "
                                    "already";
    else if (!progress)
      failures += "\n  " + llvm::toString(progress.takeError());
    else
      forms.push_back({progress->second, [&, single] {
                         return readSingle(single, parameters, take);
                       }});
    if (parameters.empty() && !progress)
      llvm::consumeError(progress.takeError());
  }
  if (llvm::sys::fs::exists(shardSetPath(runDirectory))) {
    llvm::Expected<ShardSet> set = readShardSetManifest(runDirectory);
    if (!set)
      failures += "\n  " + llvm::toString(set.takeError());
    else
      forms.push_back({set->step, [&, set = *set] {
                         return readShardSet(runDirectory, set, parameters,
                                             take);
                       }});
  }
  std::stable_sort(forms.begin(), forms.end(),
                   [](const Form &a, const Form &b) { return a.step > b.step; });
  for (const Form &form : forms) {
    llvm::Expected<TrainingState> state = form.read();
    if (state)
      return state;
    failures += "\n  " + llvm::toString(state.takeError());
  }
  if (!failures.empty())
    return checkpointError(runDirectory + ": no readable checkpoint:" +
                           failures);
  return checkpointError(runDirectory + ": no checkpoint to resume from "
                                        "(checkpoint.safetensors or a "
                                        "committed shard set, "
                                        "checkpoint.shards.json)");
}

std::string momac::rngState(const std::mt19937_64 *rng) {
  if (!rng)
    return "none";
  std::ostringstream state;
  state << *rng;
  return state.str();
}

llvm::Error momac::checkResumedBatch(const CheckpointProgress &state,
                                     int64_t globalBatch, llvm::StringRef how,
                                     bool allowed, llvm::StringRef source) {
  if (allowed || state.globalBatch == 0 || state.globalBatch == globalBatch)
    return llvm::Error::success();
  return checkpointError(llvm::formatv(
      "{0}: written by a run of {1} sequences per step; this one takes {2} "
      "({3}): resuming would change the effective batch, and with it the "
      "loss curve (match the ranks or train.micro_batches, or pass "
      "--allow-batch-change to continue with {2})",
      source, state.globalBatch, globalBatch, how));
}

llvm::Expected<std::pair<uint64_t, int64_t>>
momac::readDataPosition(llvm::StringRef checkpoint) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(checkpoint);
  if (!file)
    return file.takeError();
  // Initial weights (momarun init, upcycle) are the usual mistake here.
  if (!file->getMetadata("data_position"))
    return checkpointError(checkpoint + ": not a momarun checkpoint (its "
                                        "metadata has no data_position)");
  CheckpointProgress progress;
  if (llvm::Error error = readProgress(*file, progress))
    return std::move(error);
  return std::make_pair(progress.dataPosition, progress.step);
}

llvm::Error momac::writeSingleCheckpoint(
    llvm::StringRef path, llvm::ArrayRef<ManifestParameter> parameters,
    const std::vector<std::vector<float>> &weights,
    const std::vector<std::vector<float>> &firstMoments,
    const std::vector<std::vector<float>> &secondMoments,
    const CheckpointProgress &progress) {
  SafetensorsWriter writer;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const ManifestParameter &param = parameters[i];
    if (llvm::Error error =
            addFloats(writer, param.name, param.shape, weights[i]))
      return error;
    if (param.auxRouter)
      continue;
    if (llvm::Error error = addFloats(writer, "optim.m." + param.name,
                                      param.shape, firstMoments[i]))
      return error;
    if (llvm::Error error = addFloats(writer, "optim.v." + param.name,
                                      param.shape, secondMoments[i]))
      return error;
  }
  setProgressMetadata(writer, progress);
  return writer.write(path);
}

llvm::Expected<ShardFile> momac::writeShardCheckpoint(
    llvm::StringRef runDirectory, int rank, int ranks,
    const Manifest &manifest, llvm::ArrayRef<UnitShards> shards,
    const CheckpointProgress &progress) {
  SafetensorsWriter writer;
  llvm::json::Array parameters, units;
  for (const ManifestParameter &param : manifest.parameters)
    parameters.push_back(toJSON(param));
  for (auto [unit, shard] : llvm::zip(manifest.shardUnits, shards)) {
    std::vector<int64_t> shape{int64_t(shard.params.size())};
    llvm::ArrayRef<float> buffers[3] = {shard.params, shard.firstMoments,
                                        shard.secondMoments};
    for (int kind = 0; kind < 3; ++kind)
      if (llvm::Error error = addFloats(writer, kShardPrefixes[kind] + unit.name,
                                        shape, buffers[kind]))
        return std::move(error);
    units.push_back(toJSON(unit));
  }
  writer.setMetadata(
      "fsdp_layout",
      llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                               {"world_size", ranks},
                               {"rank", rank},
                               {"parameters", std::move(parameters)},
                               {"units", std::move(units)}}))
          .str());
  setProgressMetadata(writer, progress);
  std::string path =
      shardCheckpointPath(runDirectory, progress.step, rank, ranks);
  if (llvm::Error error = writer.write(path))
    return std::move(error);
  auto written = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                             /*RequiresNullTerminator=*/false);
  if (!written)
    return checkpointError(path + ": " + written.getError().message());
  llvm::StringRef bytes = (*written)->getBuffer();
  return ShardFile{llvm::sys::path::filename(path).str(), bytes.size(),
                   llvm::xxh3_64bits(bytes)};
}

llvm::Error momac::commitShardSet(llvm::StringRef runDirectory, int64_t step,
                                  const std::vector<ShardFile> &files) {
  llvm::json::Array shards;
  for (const ShardFile &file : files)
    shards.push_back(llvm::json::Object{{"file", file.name},
                                        {"bytes", int64_t(file.bytes)},
                                        {"xxh3", hex(file.xxh3)}});
  std::string text =
      llvm::formatv("{0:2}", llvm::json::Value(llvm::json::Object{
                                 {"format", "momarun-shard-set"},
                                 {"step", step},
                                 {"shards", std::move(shards)}}))
          .str() +
      "\n";
  if (llvm::Error error = writeFileAtomically(shardSetPath(runDirectory), text))
    return error;
  failpoint(failpoints::kAfterSetManifest);
  // Committed: every other form is older now.
  llvm::sys::fs::remove(singleCheckpointPath(runDirectory));
  for (const std::string &name : shardFiles(runDirectory))
    if (!llvm::any_of(files,
                      [&](const ShardFile &file) { return file.name == name; }))
      llvm::sys::fs::remove(joinPath(runDirectory, name));
  return llvm::Error::success();
}

void momac::removeShardSets(llvm::StringRef runDirectory) {
  // The manifest first: without it, the files are no checkpoint.
  llvm::sys::fs::remove(shardSetPath(runDirectory));
  for (const std::string &name : shardFiles(runDirectory))
    llvm::sys::fs::remove(joinPath(runDirectory, name));
}

unsigned momac::removeInterruptedCheckpointWrites(llvm::StringRef runDirectory) {
  unsigned removed = 0;
  std::error_code ec;
  std::vector<std::string> stale;
  for (llvm::sys::fs::directory_iterator it(runDirectory, ec), end;
       it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with("checkpoint.") && name.contains(".tmp-"))
      stale.push_back(it->path());
  }
  for (const std::string &path : stale)
    if (!llvm::sys::fs::remove(path))
      ++removed;
  return removed;
}
