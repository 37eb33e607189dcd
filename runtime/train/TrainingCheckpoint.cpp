//===- TrainingCheckpoint.cpp - Reading back a run's training state -------===//

#include "runtime/train/TrainingCheckpoint.h"

#include "lib/safetensors/Safetensors.h"
#include "runtime/comm/Communicator.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

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

int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

/// step, data_position and rng of a checkpoint's metadata.
llvm::Error readProgress(const SafetensorsFile &file, TrainingState &state) {
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
           const std::vector<ManifestParameter> &parameters) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  TrainingState state;
  state.parameters = parameters;
  state.source = path.str();
  if (llvm::Error error = readProgress(*file, state))
    return std::move(error);
  for (const ManifestParameter &param : parameters) {
    llvm::Expected<std::vector<float>> values = file->readFloats(param.name);
    if (!values)
      return values.takeError();
    state.weights.push_back(std::move(*values));
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
    state.firstMoments.push_back(std::move(m));
    state.secondMoments.push_back(std::move(v));
  }
  return state;
}

/// A shard set's layout, from the fsdp_layout metadata of its files.
struct ShardLayout {
  std::vector<ManifestParameter> parameters;
  std::vector<ManifestShardUnit> units;
  std::vector<int64_t> shardElements;
};

llvm::Expected<ShardLayout> parseLayout(const SafetensorsFile &file) {
  auto text = file.getMetadata("fsdp_layout");
  auto fail = [&](llvm::StringRef why) {
    return checkpointError(file.path() + ": fsdp_layout metadata: " + why);
  };
  if (!text)
    return fail("missing");
  llvm::Expected<llvm::json::Value> json = llvm::json::parse(*text);
  if (!json)
    return fail(llvm::toString(json.takeError()));
  ShardLayout layout;
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *params = root ? root->getArray("parameters") : nullptr;
  const llvm::json::Array *units = root ? root->getArray("units") : nullptr;
  if (!params || !units)
    return fail("expected parameters and units");
  for (const llvm::json::Value &value : *params) {
    const llvm::json::Object *object = value.getAsObject();
    const llvm::json::Array *shape = object ? object->getArray("shape") : nullptr;
    auto name = object ? object->getString("name") : std::nullopt;
    if (!shape || !name)
      return fail("a parameter without name or shape");
    ManifestParameter param;
    param.name = name->str();
    for (const llvm::json::Value &d : *shape)
      param.shape.push_back(d.getAsInteger().value_or(-1));
    param.auxRouter = object->getBoolean("aux_router").value_or(false);
    layout.parameters.push_back(std::move(param));
  }
  for (const llvm::json::Value &value : *units) {
    const llvm::json::Object *object = value.getAsObject();
    const llvm::json::Array *members =
        object ? object->getArray("parameters") : nullptr;
    auto offsets = object ? object->getArray("offsets") : nullptr;
    if (!members || !offsets || members->size() != offsets->size())
      return fail("a unit without parameters and offsets");
    ManifestShardUnit unit;
    unit.name = object->getString("name").value_or("").str();
    unit.elements = object->getInteger("elements").value_or(0);
    for (auto [member, offset] : llvm::zip(*members, *offsets)) {
      unit.parameters.push_back(member.getAsString().value_or("").str());
      unit.offsets.push_back(offset.getAsInteger().value_or(0));
    }
    layout.shardElements.push_back(
        object->getInteger("shard_elements").value_or(0));
    layout.units.push_back(std::move(unit));
  }
  return layout;
}

llvm::Expected<TrainingState>
readShardSet(llvm::StringRef runDirectory, int ranks,
             const std::vector<ManifestParameter> &wanted) {
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
    TrainingState other;
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

  // Each unit's flat buffers, put back together from the ranks' pieces.
  llvm::StringMap<std::pair<size_t, int64_t>> placement; // unit, offset
  std::vector<std::vector<float>> flat[3];
  const char *prefixes[3] = {"fsdp.", "fsdp.optim.m.", "fsdp.optim.v."};
  for (auto [u, unit] : llvm::enumerate(layout->units)) {
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets))
      placement[name] = {u, offset};
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> &buffer = flat[kind].emplace_back();
      buffer.reserve(unit.elements);
      for (int r = 0; r < ranks; ++r) {
        auto piece = files[r].readFloats(prefixes[kind] + unit.name);
        if (!piece)
          return piece.takeError();
        size_t owned = Communicator::ownedElements(
            size_t(layout->shardElements[u]), size_t(unit.elements), r);
        if (piece->size() < owned)
          return checkpointError(files[r].path() + ": " + prefixes[kind] +
                                 unit.name + " is shorter than its shard");
        buffer.insert(buffer.end(), piece->begin(), piece->begin() + owned);
      }
    }
  }
  state.parameters = wanted.empty() ? layout->parameters : wanted;
  llvm::StringMap<const ManifestParameter *> stored;
  for (const ManifestParameter &param : layout->parameters)
    stored[param.name] = &param;
  for (const ManifestParameter &param : state.parameters) {
    auto it = placement.find(param.name);
    const ManifestParameter *known = stored.lookup(param.name);
    if (it == placement.end() || !known)
      return checkpointError(state.source + ": no parameter " + param.name);
    if (known->shape != param.shape)
      return checkpointError(state.source + ": " + param.name +
                             " has another shape than the model's");
    auto [unit, offset] = it->second;
    int64_t n = product(param.shape);
    auto slice = [&](int kind) {
      const std::vector<float> &buffer = flat[kind][unit];
      return std::vector<float>(buffer.begin() + offset,
                                buffer.begin() + offset + n);
    };
    state.weights.push_back(slice(0));
    state.firstMoments.push_back(param.auxRouter ? std::vector<float>()
                                                 : slice(1));
    state.secondMoments.push_back(param.auxRouter ? std::vector<float>()
                                                  : slice(2));
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
  // The latest of the forms present, by the step in their metadata.
  std::optional<TrainingState> best;
  std::string failures;
  auto consider = [&](llvm::Expected<TrainingState> state) {
    if (!state) {
      failures += "\n  " + llvm::toString(state.takeError());
      return;
    }
    if (!best || state->step > best->step)
      best = std::move(*state);
  };
  std::string single = singleCheckpointPath(runDirectory);
  if (llvm::sys::fs::exists(single)) {
    if (parameters.empty())
      failures += "\n  " + single + ": a one-rank checkpoint is consolidated "
                                    "already";
    else
      consider(readSingle(single, parameters));
  }
  for (int ranks : shardSetSizes(runDirectory))
    consider(readShardSet(runDirectory, ranks, parameters));
  if (best)
    return std::move(*best);
  if (!failures.empty())
    return checkpointError(runDirectory + ": no readable checkpoint:" +
                           failures);
  return checkpointError(runDirectory + ": no checkpoint to resume from "
                                        "(checkpoint.safetensors or "
                                        "checkpoint.shard-*-of-*.safetensors)");
}

void momac::setProgressMetadata(SafetensorsWriter &writer, int64_t step,
                                uint64_t dataPosition,
                                const std::mt19937_64 *rng,
                                llvm::StringRef model) {
  writer.setMetadata("step", std::to_string(step));
  writer.setMetadata("data_position", std::to_string(dataPosition));
  if (rng) {
    std::ostringstream state;
    state << *rng;
    writer.setMetadata("rng", state.str());
  } else {
    writer.setMetadata("rng", "none");
  }
  writer.setMetadata("model", model);
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

llvm::Error momac::writeSingleCheckpoint(const TrainingState &state,
                                         llvm::StringRef path) {
  SafetensorsWriter writer;
  auto bytes = [](const std::vector<float> &v) {
    return llvm::ArrayRef<char>(reinterpret_cast<const char *>(v.data()),
                                v.size() * sizeof(float));
  };
  for (size_t i = 0; i < state.parameters.size(); ++i) {
    const ManifestParameter &param = state.parameters[i];
    if (llvm::Error error = writer.addBorrowed(param.name, DType::F32,
                                               param.shape,
                                               bytes(state.weights[i])))
      return error;
    if (param.auxRouter)
      continue;
    if (llvm::Error error =
            writer.addBorrowed("optim.m." + param.name, DType::F32,
                               param.shape, bytes(state.firstMoments[i])))
      return error;
    if (llvm::Error error =
            writer.addBorrowed("optim.v." + param.name, DType::F32,
                               param.shape, bytes(state.secondMoments[i])))
      return error;
  }
  writer.setMetadata("step", std::to_string(state.step));
  writer.setMetadata("data_position", std::to_string(state.dataPosition));
  writer.setMetadata("rng", state.rng); // already in text form
  writer.setMetadata("model", state.model);
  return writer.write(path);
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
