//===- TrainingCheckpoint.cpp - Reading back a run's training state -------===//

#include "runtime/train/TrainingCheckpoint.h"

#include "lib/config/ShardUnits.h"
#include "lib/safetensors/Safetensors.h"
#include "runtime/comm/Communicator.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

#include <functional>
#include <map>
#include <optional>
#include <sstream>

using namespace momac;

namespace {

llvm::Error checkpointError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

std::string joinPath(llvm::StringRef directory, llvm::StringRef file) {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, file);
  return path.str().str();
}

/// step, data_position, rng and model of a checkpoint's metadata.
llvm::Error readProgress(const SafetensorsFile &file,
                         CheckpointProgress &state) {
  auto step = file.getMetadata("step");
  auto position = file.getMetadata("data_position");
  if (!step || !position || step->getAsInteger(10, state.step) ||
      position->getAsInteger(10, state.dataPosition))
    return checkpointError(file.path() +
                           ": metadata lacks step or data_position");
  state.rng = file.getMetadata("rng").value_or("none").str();
  state.model = file.getMetadata("model").value_or("").str();
  return llvm::Error::success();
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
  for (auto [i, param] : llvm::enumerate(parameters)) {
    llvm::Expected<std::vector<float>> values = file->readFloats(param.name);
    if (!values)
      return values.takeError();
    std::vector<float> m, v;
    if (!param.auxRouter) {
      auto first = file->readFloats("optim.m." + param.name);
      if (!first)
        return first.takeError();
      auto second = file->readFloats("optim.v." + param.name);
      if (!second)
        return second.takeError();
      m = std::move(*first);
      v = std::move(*second);
    }
    take(i, *values, m, v);
  }
  return state;
}

/// A shard set's layout, from the fsdp_layout metadata of its files
/// (writeShardCheckpoint): the parameters and units as the manifest
/// writes them.
struct ShardLayout {
  std::vector<ManifestParameter> parameters;
  std::vector<ManifestShardUnit> units;
};

bool fromJSON(const llvm::json::Value &value, ShardLayout &layout,
              llvm::json::Path path) {
  llvm::json::ObjectMapper mapper(value, path);
  return mapper && mapper.map("parameters", layout.parameters) &&
         mapper.map("units", layout.units);
}

llvm::Expected<ShardLayout> parseLayout(const SafetensorsFile &file) {
  auto text = file.getMetadata("fsdp_layout");
  if (!text)
    return checkpointError(file.path() + ": no fsdp_layout metadata");
  llvm::Expected<ShardLayout> layout =
      llvm::json::parse<ShardLayout>(*text, "fsdp_layout");
  if (!layout)
    return checkpointError(file.path() + ": " +
                           llvm::toString(layout.takeError()));
  return layout;
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

void setProgressMetadata(SafetensorsWriter &writer,
                         const CheckpointProgress &progress) {
  writer.setMetadata("step", std::to_string(progress.step));
  writer.setMetadata("data_position", std::to_string(progress.dataPosition));
  writer.setMetadata("rng", progress.rng);
  writer.setMetadata("model", progress.model);
}

constexpr const char *kShardPrefixes[3] = {"fsdp.", "fsdp.optim.m.",
                                           "fsdp.optim.v."};

llvm::Expected<TrainingState>
readShardSet(llvm::StringRef runDirectory, int ranks,
             const std::vector<ManifestParameter> &wanted,
             TakeParameter take) {
  std::vector<SafetensorsFile> files;
  for (int r = 0; r < ranks; ++r) {
    llvm::Expected<SafetensorsFile> file =
        SafetensorsFile::open(shardCheckpointPath(runDirectory, r, ranks));
    if (!file)
      return file.takeError();
    files.push_back(std::move(*file));
  }
  TrainingState state;
  state.source = shardCheckpointPath(runDirectory, 0, ranks) + " and the " +
                 std::to_string(ranks - 1) + " other shard(s) of its set";
  if (llvm::Error error = readProgress(files[0], state))
    return std::move(error);
  for (const SafetensorsFile &file : files) {
    CheckpointProgress other;
    if (llvm::Error error = readProgress(file, other))
      return std::move(error);
    if (other.step != state.step)
      return checkpointError(llvm::formatv(
          "{0}: step {1}, but {2} has step {3}: a shard set written "
          "partly (a rank died while checkpointing)",
          file.path(), other.step, files[0].path(), state.step));
  }
  llvm::Expected<ShardLayout> layout = parseLayout(files[0]);
  if (!layout)
    return layout.takeError();

  // Where each wanted parameter lies (unit, offset), checked against the
  // stored layout before anything is read.
  llvm::StringMap<std::pair<size_t, int64_t>> placement;
  for (auto [u, unit] : llvm::enumerate(layout->units))
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets))
      placement[name] = {u, offset};
  state.parameters = wanted.empty() ? layout->parameters : wanted;
  llvm::StringMap<const ManifestParameter *> stored;
  for (const ManifestParameter &param : layout->parameters)
    stored[param.name] = &param;
  std::vector<std::vector<size_t>> parametersOfUnit(layout->units.size());
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
  // ranks' pieces, then its parameters' slices.
  for (auto [u, unit] : llvm::enumerate(layout->units)) {
    if (parametersOfUnit[u].empty())
      continue;
    int64_t shard = shardElements(unit.elements, ranks);
    std::vector<float> flat[3];
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> &buffer = flat[kind];
      buffer.reserve(unit.elements);
      for (int r = 0; r < ranks; ++r) {
        auto piece = files[r].readFloats(kShardPrefixes[kind] + unit.name);
        if (!piece)
          return piece.takeError();
        if (piece->size() != size_t(shard))
          return checkpointError(files[r].path() + ": " +
                                 kShardPrefixes[kind] + unit.name +
                                 " is not a shard of " +
                                 std::to_string(unit.elements) +
                                 " elements over " + std::to_string(ranks) +
                                 " ranks");
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
  return state;
}

/// The rank counts of the shard sets in `runDirectory` (by file name).
std::vector<int> shardSetSizes(llvm::StringRef runDirectory) {
  std::vector<int> sizes;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(runDirectory, ec), end;
       it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    int rank = -1, ranks = 0;
    if (!name.consume_front("checkpoint.shard-") ||
        !name.consume_back(".safetensors"))
      continue;
    auto [rankText, countText] = name.split("-of-");
    if (rankText.getAsInteger(10, rank) || countText.getAsInteger(10, ranks))
      continue;
    if (rank == 0 && ranks > 0)
      sizes.push_back(ranks);
  }
  return sizes;
}

} // namespace

std::string momac::singleCheckpointPath(llvm::StringRef runDirectory) {
  return joinPath(runDirectory, "checkpoint.safetensors");
}

std::string momac::shardCheckpointPath(llvm::StringRef runDirectory, int rank,
                                       int ranks) {
  return joinPath(runDirectory,
                  llvm::formatv("checkpoint.shard-{0}-of-{1}.safetensors",
                                rank, ranks)
                      .str());
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
  // The forms present, newest first by the step in their headers; only the
  // newest readable one is read whole (an older form exists only after a
  // crash between writing a new form and removing the old).
  struct Form {
    int64_t step;
    std::function<llvm::Expected<TrainingState>()> read;
  };
  std::vector<Form> forms;
  std::string failures;
  auto stepOf = [&](const std::string &path) -> std::optional<int64_t> {
    llvm::Expected<std::pair<uint64_t, int64_t>> progress =
        readDataPosition(path);
    if (!progress) {
      failures += "\n  " + llvm::toString(progress.takeError());
      return std::nullopt;
    }
    return progress->second;
  };
  std::string single = singleCheckpointPath(runDirectory);
  if (llvm::sys::fs::exists(single)) {
    if (parameters.empty())
      failures += "\n  " + single + ": a one-rank checkpoint is consolidated "
                                    "already";
    else if (std::optional<int64_t> step = stepOf(single))
      forms.push_back({*step, [&, single] {
                         return readSingle(single, parameters, take);
                       }});
  }
  for (int ranks : shardSetSizes(runDirectory))
    if (std::optional<int64_t> step =
            stepOf(shardCheckpointPath(runDirectory, 0, ranks)))
      forms.push_back({*step, [&, ranks] {
                         return readShardSet(runDirectory, ranks, parameters,
                                             take);
                       }});
  std::stable_sort(forms.begin(), forms.end(),
                   [](const Form &a, const Form &b) { return a.step > b.step; });
  std::optional<TrainingState> best;
  for (const Form &form : forms) {
    llvm::Expected<TrainingState> state = form.read();
    if (state) {
      best = std::move(*state);
      break;
    }
    failures += "\n  " + llvm::toString(state.takeError());
  }
  if (best)
    return std::move(*best);
  if (!failures.empty())
    return checkpointError(runDirectory + ": no readable checkpoint:" +
                           failures);
  return checkpointError(runDirectory + ": no checkpoint to resume from "
                                        "(checkpoint.safetensors or "
                                        "checkpoint.shard-*-of-*.safetensors)");
}

std::string momac::rngState(const std::mt19937_64 *rng) {
  if (!rng)
    return "none";
  std::ostringstream state;
  state << *rng;
  return state.str();
}

llvm::Expected<std::pair<uint64_t, int64_t>>
momac::readDataPosition(llvm::StringRef checkpoint) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(checkpoint);
  if (!file)
    return file.takeError();
  uint64_t position = 0;
  int64_t step = 0;
  auto text = file->getMetadata("data_position");
  if (!text || text->getAsInteger(10, position))
    return checkpointError(checkpoint + ": not a momarun checkpoint (its "
                                        "metadata has no data_position)");
  if (auto steps = file->getMetadata("step"))
    (void)steps->getAsInteger(10, step);
  return std::make_pair(position, step);
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

llvm::Error momac::writeShardCheckpoint(llvm::StringRef runDirectory,
                                        int rank, int ranks,
                                        const Manifest &manifest,
                                        llvm::ArrayRef<UnitShards> shards,
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
        return error;
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
  return writer.write(shardCheckpointPath(runDirectory, rank, ranks));
}

void momac::removeOtherCheckpoints(llvm::StringRef runDirectory,
                                   const std::vector<std::string> &keep) {
  auto kept = [&](llvm::StringRef path) {
    return llvm::is_contained(keep, path.str());
  };
  std::string single = singleCheckpointPath(runDirectory);
  if (!kept(single))
    llvm::sys::fs::remove(single);
  for (int ranks : shardSetSizes(runDirectory))
    for (int r = 0; r < ranks; ++r) {
      std::string path = shardCheckpointPath(runDirectory, r, ranks);
      if (!kept(path))
        llvm::sys::fs::remove(path);
    }
}
