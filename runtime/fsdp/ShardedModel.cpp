//===- ShardedModel.cpp - One rank's shards of an FSDP model --------------===//

#include "runtime/fsdp/ShardedModel.h"

#include "lib/config/ShardUnits.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

using namespace momac;

using Clock = std::chrono::steady_clock;

ShardedModel::ShardedModel(const Manifest &manifest, Device &device,
                           Communicator &comm)
    : manifest(manifest), device(device), comm(comm) {
  for (const ManifestShardUnit &unit : manifest.shardUnits) {
    Shard &shard = shards.emplace_back();
    shard.elements = unit.elements;
    shard.shardElements = shardElements(unit.elements, comm.size());
    shard.begin = std::min<int64_t>(unit.elements,
                                    int64_t(comm.rank()) * shard.shardElements);
    for (auto *buffer : {&shard.params, &shard.grads, &shard.firstMoments,
                         &shard.secondMoments})
      buffer->assign(shard.shardElements, 0.0f);
    if (unit.elements > largestUnit) {
      largestUnit = unit.elements;
      largestUnitName = unit.name;
    }
  }
  reduced.resize(largestUnitShard());
  for (size_t i = 0; i < manifest.parameters.size(); ++i)
    parameterIndex[manifest.parameters[i].name] = i;
  placement.resize(manifest.parameters.size());
  for (auto [u, unit] : llvm::enumerate(manifest.shardUnits)) {
    int64_t covered = 0;
    std::vector<std::pair<int64_t, int64_t>> spans;
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets)) {
      size_t p = parameterIndex[name];
      placement[p] = {u, offset};
      spans.push_back({offset, offset + manifest.parameters[p].numElements()});
    }
    llvm::sort(spans);
    for (auto [begin, end] : spans) {
      if (begin > covered)
        shards[u].gaps.push_back({covered, begin});
      covered = std::max(covered, end);
    }
    if (covered < unit.elements)
      shards[u].gaps.push_back({covered, unit.elements});
  }
}

size_t ShardedModel::largestUnitShard() const {
  int64_t most = 0;
  for (const Shard &shard : shards)
    most = std::max(most, shard.shardElements);
  return size_t(most);
}

void ShardedModel::keepSlice(size_t p, const std::vector<float> &full,
                             std::vector<float> Shard::*member) {
  if (full.empty())
    return;
  auto [unit, offset] = placement[p];
  Shard &shard = shards[unit];
  int64_t begin = std::max(offset, shard.begin);
  int64_t end = std::min<int64_t>(offset + int64_t(full.size()),
                                  shard.begin + shard.shardElements);
  std::vector<float> &into = shard.*member;
  for (int64_t i = begin; i < end; ++i)
    into[i - shard.begin] = full[i - offset];
}

std::vector<OptimizerSegment> ShardedModel::optimizerSegments() const {
  std::vector<OptimizerSegment> segments;
  for (auto [u, unit] : llvm::enumerate(manifest.shardUnits)) {
    const Shard &shard = shards[u];
    for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets)) {
      const ManifestParameter &param =
          manifest.parameters[parameterIndex.lookup(name)];
      if (param.auxRouter)
        continue;
      int64_t begin = std::max(offset, shard.begin) - shard.begin;
      int64_t end = std::min(offset + param.numElements(),
                             shard.begin + shard.shardElements) -
                    shard.begin;
      if (begin >= end)
        continue;
      if (!segments.empty() && segments.back().unit == u &&
          segments.back().decayed == param.weightDecay &&
          segments.back().end <= begin)
        segments.back().end = end; // across the zero padding
      else
        segments.push_back({u, begin, end, param.weightDecay});
    }
  }
  return segments;
}

MomartFsdpCallbacks ShardedModel::callbacks() {
  MomartFsdpCallbacks table;
  table.context = this;
  table.allGatherStart = [](void *context, int32_t unit, float *full) {
    static_cast<ShardedModel *>(context)->allGatherStart(unit, full);
  };
  table.allGatherWait = [](void *context, int32_t unit, float *full) {
    static_cast<ShardedModel *>(context)->allGatherWait(unit, full);
  };
  table.reduceScatter = [](void *context, int32_t unit, float *full) {
    static_cast<ShardedModel *>(context)->reduceScatter(unit, full);
  };
  return table;
}

llvm::Error ShardedModel::placeShards() {
  for (auto [u, shard] : llvm::enumerate(shards))
    for (std::vector<float> *buffer : {&shard.params, &shard.grads,
                                       &shard.firstMoments,
                                       &shard.secondMoments})
      if (llvm::Error error =
              keep(*buffer, "the shard of unit " + manifest.shardUnits[u].name))
        return error;
  return keep(reduced, "the reduce-scatter buffer");
}

llvm::Error ShardedModel::keep(std::vector<float> &buffer,
                               const llvm::Twine &what) {
  if (buffer.empty())
    return llvm::Error::success();
  return device.keep(buffer.data(), buffer.size() * sizeof(float), what.str());
}

void ShardedModel::zeroGradients() {
  for (Shard &shard : shards)
    if (llvm::Error error = device.zero(shard.grads.data(), shard.grads.size()))
      fail(std::move(error));
}

void ShardedModel::fail(llvm::Error error) {
  llvm::errs() << "momarun: error: " << llvm::toString(std::move(error))
               << "\n";
  llvm::errs().flush();
  comm.abort(1);
  std::abort(); // not reached: abort ends the process
}

std::string ShardedModel::describe(const char *what, int32_t unit) const {
  return llvm::formatv("{0} of unit {1}", what, manifest.shardUnits[unit].name)
      .str();
}

void ShardedModel::allGatherStart(int32_t unit, float *full) {
  Shard &shard = shards[unit];
  auto started = comm.startAllGather(
      device.stepAddress(shard.params.data(), /*read=*/true), full,
      size_t(shard.shardElements), size_t(shard.elements),
      describe("all-gather", unit));
  if (!started)
    fail(started.takeError());
  pending[full] = std::move(*started);
}

void ShardedModel::allGatherWait(int32_t unit, float *full) {
  auto it = pending.find(full);
  if (it == pending.end())
    fail(llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        describe("a wait without a started all-gather", unit)));
  auto start = Clock::now();
  if (llvm::Error error = it->second->wait())
    fail(std::move(error));
  communicationWait += Clock::now() - start;
  pending.erase(it);
}

void ShardedModel::reduceScatter(int32_t unit, float *full) {
  Shard &shard = shards[unit];
  for (auto [begin, end] : shard.gaps)
    device.zeroStepMemory(full + begin, size_t(end - begin));
  auto start = Clock::now();
  if (llvm::Error error = comm.reduceScatterSum(
          full, device.stepAddress(reduced.data(), /*read=*/false),
          size_t(shard.shardElements), size_t(shard.elements),
          describe("reduce-scatter", unit)))
    fail(std::move(error));
  device.collectiveWrote(reduced.data());
  communicationWait += Clock::now() - start;
  if (llvm::Error error =
          device.accumulate(shard.grads.data(), reduced.data(),
                            size_t(shard.shardElements), gradientScale,
                            /*first=*/false))
    fail(std::move(error));
}
