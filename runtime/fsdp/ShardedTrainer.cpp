//===- ShardedTrainer.cpp - One model trained across ranks (FSDP) ---------===//

#include "runtime/fsdp/ShardedTrainer.h"

#include "lib/config/ShardUnits.h"
#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/comm/nccl/ArtifactNcclCommunicator.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/ModalityBalance.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/device/cuda/ArtifactCudaRuntime.h"
#include "runtime/fsdp/FsdpAbi.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "lib/config/ModelStats.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>

using namespace momac;

char CollectiveStop::ID = 0;

namespace {

using Clock = std::chrono::steady_clock;

llvm::Error fsdpError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

/// A contiguous range of a rank's shard of one unit that AdamW updates the
/// same way: trained parameters with (or without) weight decay, and the
/// alignment padding between them, which stays zero.
struct OptimizerSegment {
  size_t unit;
  int64_t begin, end; // in the shard
  bool decayed;
};

/// This rank's piece of every FSDP unit, and the callbacks that the
/// compiled step's gathers and reduce-scatters reach. The shards live
/// where `artifact`'s steps run: host memory for a CPU artifact; for a CUDA
/// artifact (or its emulation), device memory, each shard buffer kept there
/// (ResidentBuffers), its host vector current only when a checkpoint asks.
/// `comm` carries the units' collectives: MPI on host memory, or NCCL on
/// the device.
class ShardedModel {
public:
  struct Shard;

  ShardedModel(const LoadedArtifact &artifact, Communicator &comm)
      : manifest(artifact.manifest()), comm(comm), artifact(artifact) {
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
    // The padding between a unit's parameters (zeroed before each
    // reduce-scatter: the compiled step never writes it).
    for (auto [u, unit] : llvm::enumerate(manifest.shardUnits)) {
      int64_t covered = 0;
      std::vector<std::pair<int64_t, int64_t>> spans;
      for (auto [name, offset] : llvm::zip(unit.parameters, unit.offsets)) {
        size_t p = parameterIndex[name];
        placement[p] = {u, offset};
        spans.push_back(
            {offset, offset + manifest.parameters[p].numElements()});
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

  size_t largestUnitShard() const {
    int64_t most = 0;
    for (const Shard &shard : shards)
      most = std::max(most, shard.shardElements);
    return size_t(most);
  }

  /// Keeps this rank's slice of parameter `p`'s full tensor `full` in the
  /// shard buffer `member` (params or a moment) of its unit.
  void keepSlice(size_t p, const std::vector<float> &full,
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

  /// The segments of this rank's shards that AdamW updates (not the aux
  /// routers, MODEL_SPEC section 7).
  std::vector<OptimizerSegment> optimizerSegments() const {
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

  MomartFsdpCallbacks callbacks() {
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

  /// Keeps every shard buffer where the steps run.
  llvm::Error placeShards() {
    for (auto [u, shard] : llvm::enumerate(shards))
      for (std::vector<float> *buffer :
           {&shard.params, &shard.grads, &shard.firstMoments,
            &shard.secondMoments})
        if (llvm::Error error = keep(*buffer, "the shard of unit " +
                                                  manifest.shardUnits[u].name))
          return error;
    return keep(reduced, "the reduce-scatter buffer");
  }

  /// Keeps `buffer` where the steps run (nothing for a CPU artifact).
  llvm::Error keep(std::vector<float> &buffer, const llvm::Twine &what) {
    if (buffer.empty())
      return llvm::Error::success();
    return artifact.keepOnDevice(buffer.data(), buffer.size() * sizeof(float),
                                 what.str());
  }

  void zeroGradients() {
    for (Shard &shard : shards)
      if (llvm::Error error =
              artifact.zero(shard.grads.data(), shard.grads.size()))
        fail(std::move(error));
  }

  struct Shard {
    std::vector<float> params, grads, firstMoments, secondMoments;
    int64_t elements = 0, shardElements = 0, begin = 0;
    std::vector<std::pair<int64_t, int64_t>> gaps;
  };
  std::vector<Shard> shards;
  /// Each micro-batch's gradients are added with this weight: 1 / (R M).
  float gradientScale = 1.0f;
  /// Time spent blocked in collectives during the compiled step.
  Clock::duration communicationWait{};
  int64_t largestUnit = 0;
  std::string largestUnitName;

private:
  [[noreturn]] void fail(llvm::Error error) {
    llvm::errs() << "momarun: error: " << llvm::toString(std::move(error))
                 << "\n";
    llvm::errs().flush();
    comm.abort(1);
    std::abort(); // not reached: abort ends the process
  }

  std::string describe(const char *what, int32_t unit) const {
    return llvm::formatv("{0} of unit {1}", what,
                         manifest.shardUnits[unit].name)
        .str();
  }

  void allGatherStart(int32_t unit, float *full) {
    Shard &shard = shards[unit];
    auto started = comm.startAllGather(
        artifact.stepAddress(shard.params.data(), /*read=*/true), full,
                                       size_t(shard.shardElements),
                                       size_t(shard.elements),
                                       describe("all-gather", unit));
    if (!started)
      fail(started.takeError());
    pending[full] = std::move(*started);
  }

  void allGatherWait(int32_t unit, float *full) {
    auto it = pending.find(full);
    if (it == pending.end())
      fail(fsdpError(describe("a wait without a started all-gather", unit)));
    auto start = Clock::now();
    if (llvm::Error error = it->second->wait())
      fail(std::move(error));
    communicationWait += Clock::now() - start;
    pending.erase(it);
  }

  void reduceScatter(int32_t unit, float *full) {
    Shard &shard = shards[unit];
    for (auto [begin, end] : shard.gaps)
      artifact.zeroStepMemory(full + begin, size_t(end - begin));
    auto start = Clock::now();
    if (llvm::Error error = comm.reduceScatterSum(
            full, artifact.stepAddress(reduced.data(), /*read=*/false),
            size_t(shard.shardElements), size_t(shard.elements),
            describe("reduce-scatter", unit)))
      fail(std::move(error));
    artifact.collectiveWrote(reduced.data());
    communicationWait += Clock::now() - start;
    if (llvm::Error error = artifact.accumulate(
            shard.grads.data(), reduced.data(), size_t(shard.shardElements),
            gradientScale, /*first=*/false))
      fail(std::move(error));
  }

  const Manifest &manifest;
  Communicator &comm;
  const LoadedArtifact &artifact;
  llvm::StringMap<size_t> parameterIndex;
  /// Each parameter's unit and offset in it, by manifest index.
  std::vector<std::pair<size_t, int64_t>> placement;
  llvm::DenseMap<float *, std::unique_ptr<PendingCollective>> pending;
  std::vector<float> reduced;
};

} // namespace

llvm::Error momac::trainSharded(const TrainOptions &options,
                                Communicator &comm) {
  const int rank = comm.rank(), ranks = comm.size();
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
  const Manifest &manifest = artifact->manifest();
  const ModelConfig &config = artifact->config();
  const TrainConfig &hyper = config.train;
  if (manifest.shardUnits.empty())
    return fsdpError(options.artifact +
                     ": compiled without --fsdp, so it cannot train on " +
                     std::to_string(ranks) +
                     " ranks; compile it with momac MODEL.json --fsdp -o ART");
  // What this rank keeps (momac --report --ranks R), times the ranks that
  // share this machine's memory, against --memory-limit or the memory.
  {
    int64_t local = ranks;
    if (const char *size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
      local = std::max<int64_t>(1, std::atoll(size));
    if (llvm::Error error = checkMemoryEstimate(
            computeShardedStateBytes(config, ranks).totalBytes() * local,
            llvm::formatv("training {0} on {1} ranks, {2} of them on this "
                          "machine (each: its shards of the weights, "
                          "gradients and AdamW moments, and two gathered "
                          "units)",
                          manifest.model, ranks, local)
                .str(),
            options.memoryLimitBytes))
      return error;
    // Each rank's GPU holds its own shards (DeviceChoice.h).
    if (llvm::Error error = artifact->checkDeviceMemory(
            computeShardedStateBytes(config, ranks).totalBytes(),
            llvm::formatv("training {0} on {1} ranks (this rank's shards and "
                          "two gathered units)",
                          manifest.model, ranks)
                .str()))
      return error;
  }
  auto install = reinterpret_cast<void (*)(const MomartFsdpCallbacks *)>(
      artifact->symbol("momart_fsdp_install"));
  if (!install)
    return fsdpError(options.artifact +
                     "/model.so: no momart_fsdp_install (not an FSDP artifact)");
  auto gradEntry = artifact->entryPoint("fsdp_grad");
  auto normEntry = artifact->entryPoint("fsdp_grad_norm");
  auto decayedEntry = artifact->entryPoint("fsdp_adamw_decayed");
  auto undecayedEntry = artifact->entryPoint("fsdp_adamw_undecayed");
  for (auto *entry : {&gradEntry, &normEntry, &decayedEntry, &undecayedEntry})
    if (!*entry)
      return entry->takeError();

  if (std::error_code ec =
          llvm::sys::fs::create_directories(options.runDirectory))
    return fsdpError(options.runDirectory + ": " + ec.message());
  const std::string metricsPath =
      (options.runDirectory + "/metrics.jsonl");
  // Each rank removes what its own interrupted checkpoint write left.
  if (unsigned stale = removeStaleTemporaries(
          shardCheckpointPath(options.runDirectory, rank, ranks)))
    llvm::errs() << llvm::formatv("momarun: rank {0} removed {1} temporary "
                                  "file(s) of an interrupted checkpoint "
                                  "write\n",
                                  rank, stale);

  // This rank's shard of the state. Fresh weights (drawn or loaded) and a
  // checkpoint (of any rank count) come one parameter at a time, so a rank
  // holds, beyond its shard, at most one parameter (or one FSDP unit of a
  // shard set being put back together).
  // A CUDA artifact's shards live in GPU memory, and its units' collectives
  // are the NCCL it carries; its emulation (--target=cuda-emulated) keeps
  // the shards in its "device" memory and gathers them over MPI.
  cuda::ArtifactCudaRuntime *device = artifact->deviceRuntime();
  std::unique_ptr<Communicator> nccl;
  Communicator *unitComm = &comm;
  if (device && manifest.target == "cuda") {
    if (!device->nccl())
      return fsdpError(options.artifact +
                       "/model.so: no NCCL for the ranks' collectives; "
                       "recompile it with momac --fsdp --target=cuda");
    llvm::Expected<std::unique_ptr<Communicator>> created =
        createArtifactNcclCommunicator(comm, *device->nccl());
    if (!created)
      return created.takeError();
    nccl = std::move(*created);
    unitComm = nccl.get();
  }
  ShardedModel model(*artifact, *unitComm);
  const EntryPointSpec &gradSpec = *gradEntry->first;
  const BufferSpec *noiseSpec = nullptr;
  for (const BufferSpec &spec : gradSpec.arguments)
    if (spec.name == kGumbelNoiseArgument)
      noiseSpec = &spec;
  const uint64_t seed = options.seed.value_or(uint64_t(hyper.seed));
  std::mt19937_64 noiseRng(seed ^ 0x9e3779b97f4a7c15ULL);
  TrainingState state;
  if (options.resume) {
    llvm::Expected<TrainingState> read = readTrainingCheckpointEach(
        options.runDirectory, manifest.parameters,
        [&](size_t p, std::vector<float> &weights, std::vector<float> &m,
            std::vector<float> &v) {
          model.keepSlice(p, weights, &ShardedModel::Shard::params);
          model.keepSlice(p, m, &ShardedModel::Shard::firstMoments);
          model.keepSlice(p, v, &ShardedModel::Shard::secondMoments);
        });
    if (!read)
      return read.takeError();
    state = std::move(*read);
    if (rank == 0)
      if (llvm::Error error = truncateMetrics(metricsPath, state.step))
        return error;
    if (noiseSpec) {
      std::istringstream stream(state.rng);
      if (!(stream >> noiseRng))
        return fsdpError(state.source +
                         ": metadata lacks the router-noise RNG state (rng)");
    }
  } else {
    // The moments start at zero, as the shards do.
    auto keep = [&](size_t p, std::vector<float> &values) {
      model.keepSlice(p, values, &ShardedModel::Shard::params);
    };
    if (options.initWeights.empty())
      Weights::initializeEach(manifest, seed, keep);
    else if (llvm::Error error =
                 Weights::loadEach(manifest, options.initWeights, keep))
      return error;
    // Stage 2 of an upcycling: where stage 1's data and compute stopped.
    int64_t stageOneSteps = 0;
    if (!options.dataPositionFrom.empty()) {
      llvm::Expected<std::pair<uint64_t, int64_t>> from =
          readDataPosition(options.dataPositionFrom);
      if (!from)
        return from.takeError();
      std::tie(state.dataPosition, stageOneSteps) = *from;
    }
    if (rank == 0) {
      llvm::sys::fs::remove(metricsPath);
      if (llvm::Error error = writeNewRunRecord(
              options.runDirectory, config,
              manifest.batchSize * manifest.seqLen * hyper.microBatches *
                  ranks,
              options.dataPositionFrom, stageOneSteps))
        return error;
    }
  }
  const int64_t firstStep = state.step + 1;
  uint64_t dataPosition = state.dataPosition;

  if (llvm::Error error = model.placeShards())
    return error;
  MomartFsdpCallbacks callbacks = model.callbacks();
  install(&callbacks);

  // What each rank holds (momac --report --ranks R predicts the same).
  RankMemory memory;
  for (const ShardedModel::Shard &shard : model.shards)
    memory.parameterBytes += shard.shardElements * int64_t(sizeof(float));
  memory.gradientBytes = memory.parameterBytes;
  memory.optimizerBytes = 2 * memory.parameterBytes;
  memory.gatheredBytes = 2 * model.largestUnit * int64_t(sizeof(float));
  memory.largestUnit = model.largestUnitName;
  reportRankMemory(llvm::outs(), options.runDirectory, rank, ranks,
                   unitComm->backend(), memory);

  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  SequenceStream *stream = data->stream.get();

  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  const int64_t microBatches = hyper.microBatches;
  const int64_t globalMicroBatches = microBatches * ranks;
  model.gradientScale = 1.0f / float(globalMicroBatches);
  std::vector<int32_t> tokens(batch * (seqLen + 1));
  const int64_t stepSequences = globalMicroBatches * batch;
  std::vector<int32_t> window(stepSequences * (seqLen + 1));
  const std::vector<double> targetShares = modalityTargetShares(config);
  int32_t batchRows = int32_t(batch);
  std::vector<float> noise(noiseSpec ? noiseSpec->numElements() : 0);
  std::vector<std::vector<float>> noiseOfMicroBatch(
      noiseSpec ? microBatches : 0);
  llvm::StringMap<void *> gradArguments, gradResults;
  gradArguments["tokens"] = tokens.data();
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  std::vector<std::vector<float>> gradOutputs =
      allocateResults(gradSpec, gradResults);
  if (noiseSpec)
    gradArguments[kGumbelNoiseArgument] = noise.data();
  auto gradBuffers = bindByName(gradSpec, gradArguments, gradResults);
  if (!gradBuffers)
    return gradBuffers.takeError();

  // The optimizer's chunked entry points, over staging buffers when a
  // segment's last chunk is short.
  const int64_t chunk = manifest.shardChunkElements;
  std::vector<float> stage[4];
  for (std::vector<float> &buffer : stage) {
    buffer.assign(chunk, 0.0f);
    if (llvm::Error error = model.keep(buffer, "an optimizer staging buffer"))
      return error;
  }
  std::vector<float> schedule(3), clipFactor(1), chunkNorm(1);
  const std::vector<OptimizerSegment> segments = model.optimizerSegments();
  auto forEachChunk = [&](auto &&body) -> llvm::Error {
    for (const OptimizerSegment &segment : segments) {
      ShardedModel::Shard &shard = model.shards[segment.unit];
      for (int64_t at = segment.begin; at < segment.end; at += chunk) {
        int64_t n = std::min(chunk, segment.end - at);
        float *home[4] = {shard.params.data() + at, shard.grads.data() + at,
                          shard.firstMoments.data() + at,
                          shard.secondMoments.data() + at};
        bool staged = n < chunk;
        float *data[4];
        for (int k = 0; k < 4; ++k) {
          data[k] = staged ? stage[k].data() : home[k];
          if (!staged)
            continue;
          if (llvm::Error error = artifact->copy(stage[k].data(), home[k], n))
            return error;
          if (llvm::Error error =
                  artifact->zero(stage[k].data() + n, size_t(chunk - n)))
            return error;
        }
        if (llvm::Error error = body(segment, data))
          return error;
        if (staged)
          for (int k = 0; k < 4; ++k)
            if (llvm::Error error = artifact->copy(home[k], stage[k].data(), n))
              return error;
      }
    }
    return llvm::Error::success();
  };

  std::error_code ec;
  std::optional<llvm::raw_fd_ostream> metrics;
  if (rank == 0) {
    metrics.emplace(metricsPath, ec, llvm::sys::fs::OF_Append);
    if (ec)
      return fsdpError(metricsPath + ": " + ec.message());
  }
  const size_t modalities = config.modalities.size();
  const int64_t lastStep = firstStep + options.steps - 1;
  auto runStart = Clock::now();

  auto saveCheckpoint = [&](int64_t completed) -> llvm::Error {
    std::vector<UnitShards> shards;
    for (ShardedModel::Shard &shard : model.shards) {
      for (std::vector<float> *buffer :
           {&shard.params, &shard.firstMoments, &shard.secondMoments})
        if (llvm::Error error = artifact->copyToHost(buffer->data()))
          return error;
      shards.push_back(
          {shard.params, shard.firstMoments, shard.secondMoments});
    }
    CheckpointProgress progress;
    progress.step = completed;
    progress.dataPosition = dataPosition;
    progress.rng = rngState(noiseSpec ? &noiseRng : nullptr);
    progress.model = manifest.model;
    if (llvm::Error error = writeShardCheckpoint(
            options.runDirectory, rank, ranks, manifest, shards, progress))
      return error;
    // Every shard is in place before the older forms go.
    if (llvm::Error error = comm.barrier("the checkpoint barrier"))
      return error;
    if (rank == 0) {
      std::vector<std::string> keep;
      for (int r = 0; r < ranks; ++r)
        keep.push_back(shardCheckpointPath(options.runDirectory, r, ranks));
      removeOtherCheckpoints(options.runDirectory, keep);
    }
    return llvm::Error::success();
  };

  int64_t skippedSteps = 0;
  int64_t lastCheckpoint = options.resume ? firstStep - 1 : 0;
  for (int64_t step = firstStep; step <= lastStep; ++step) {
    auto stepStart = Clock::now();
    const uint64_t stepDataPosition = dataPosition;
    const std::mt19937_64 stepNoiseRng = noiseRng;
    model.communicationWait = {};
    model.zeroGradients();
    // Rank r's micro-batches are the global ones r*M .. r*M + M-1; the
    // router noise is drawn for all of them in order, as one rank would.
    if (noiseSpec)
      for (int64_t g = 0; g < globalMicroBatches; ++g) {
        sampleGumbelNoise(noiseRng, noise);
        if (g / microBatches == rank)
          noiseOfMicroBatch[g % microBatches] = noise;
      }
    // The step's R * M * B sequences, and which of them each rank trains:
    // rank r the r-th M * B (MODEL_SPEC section 8), or a balanced deal.
    stream->seek(dataPosition);
    if (llvm::Error error = stream->next(size_t(stepSequences), window))
      return error;
    std::vector<std::vector<uint64_t>> sequenceCounts;
    for (int64_t i = 0; i < stepSequences; ++i)
      sequenceCounts.push_back(config.countTargetsByModality(
          llvm::ArrayRef<int32_t>(window).slice(i * (seqLen + 1), seqLen + 1)));
    std::vector<std::vector<size_t>> deal(ranks);
    if (options.balanceModalities) {
      deal = balanceByModality(sequenceCounts, targetShares, ranks,
                               size_t(microBatches * batch));
    } else {
      for (int64_t i = 0; i < stepSequences; ++i)
        deal[i / (microBatches * batch)].push_back(size_t(i));
    }
    std::vector<std::vector<uint64_t>> rankCounts(
        ranks, std::vector<uint64_t>(modalities, 0));
    for (int r = 0; r < ranks; ++r)
      for (size_t i : deal[r])
        for (size_t m = 0; m < modalities; ++m)
          rankCounts[r][m] += sequenceCounts[i][m];

    std::vector<double> sums(1 + 2 * modalities, 0.0);
    for (int64_t micro = 0; micro < microBatches; ++micro) {
      for (int64_t row = 0; row < batch; ++row) {
        size_t sequence = deal[rank][size_t(micro * batch + row)];
        std::copy_n(window.begin() + sequence * (seqLen + 1), seqLen + 1,
                    tokens.begin() + row * (seqLen + 1));
      }
      if (noiseSpec)
        noise = noiseOfMicroBatch[micro];
      if (llvm::Error error = gradEntry->second(gradBuffers->data()))
        return error;
      sums[0] += gradOutputs[0][0];
      std::vector<uint64_t> counts = config.countTargetsByModality(tokens);
      for (size_t m = 0; m < modalities; ++m) {
        sums[1 + m] += double(gradOutputs[1 + m][0]) * double(counts[m]);
        sums[1 + modalities + m] += double(counts[m]);
      }
    }
    dataPosition += uint64_t(globalMicroBatches * batch);
    auto computeEnd = Clock::now();

    // The global gradient norm from the shards' squared norms.
    double squares = 0;
    if (llvm::Error error = forEachChunk(
            [&](const OptimizerSegment &, float **data) -> llvm::Error {
              void *buffers[] = {data[1], chunkNorm.data()};
              if (llvm::Error error = normEntry->second(buffers))
                return error;
              squares += double(chunkNorm[0]) * double(chunkNorm[0]);
              return llvm::Error::success();
            }))
      return error;
    sums.push_back(squares);
    // Each rank's compute time, to find the slowest.
    std::vector<double> times(ranks, 0.0);
    times[rank] = seconds(computeEnd - stepStart);
    sums.insert(sums.end(), times.begin(), times.end());
    if (llvm::Error error =
            comm.allReduceSum(sums.data(), sums.size(), "the step's sums"))
      return error;
    const double loss = sums[0] / double(globalMicroBatches);
    const double gradNorm = std::sqrt(sums[1 + 2 * modalities]);
    double slowest = 0;
    for (int r = 0; r < ranks; ++r)
      slowest = std::max(slowest, sums[2 + 2 * modalities + r]);
    double lr = learningRate(hyper, step);
    // A non-finite loss or gradient norm (all-reduced: every rank sees the
    // same) stops the run before the update or, with --skip-nonfinite, skips
    // the update on every rank, as on one rank (Trainer.cpp).
    const bool finite = std::isfinite(loss) && std::isfinite(gradNorm);
    if (!finite) {
      bool skip = skippedSteps < options.skipNonFinite;
      if (rank == 0) {
        *metrics << llvm::formatv("{0}", llvm::json::Value(nonFiniteStepLine(
                                             step, loss, lr, skip)))
                 << "\n";
        metrics->flush();
      }
      std::string what = llvm::formatv("the loss is {0} and the gradient "
                                       "norm {1}",
                                       loss, gradNorm)
                             .str();
      if (!skip) {
        if (lastCheckpoint < step - 1) {
          // The shards still hold the state after step - 1: keep it, with
          // the data position and noise stream of this step's start.
          dataPosition = stepDataPosition;
          noiseRng = stepNoiseRng;
          if (llvm::Error error = saveCheckpoint(step - 1))
            return error;
          lastCheckpoint = step - 1;
        }
        return llvm::make_error<CollectiveStop>(nonFiniteStopMessage(
            step, what, lastCheckpoint,
            llvm::formatv("the shard set RUN/checkpoint.shard-*-of-{0}"
                          ".safetensors",
                          ranks)
                .str()));
      }
      ++skippedSteps;
      if (rank == 0)
        warnNonFiniteSkipped(step, what, skippedSteps, options.skipNonFinite);
    } else {
      schedule = {float(lr), float(1 - std::pow(hyper.beta1, double(step))),
                  float(1 - std::pow(hyper.beta2, double(step)))};
      clipFactor[0] = hyper.gradClip > 0
                          ? std::min(1.0f, float(hyper.gradClip) /
                                               (float(gradNorm) + 1e-6f))
                          : 1.0f;
      if (llvm::Error error = forEachChunk(
              [&](const OptimizerSegment &segment,
                  float **data) -> llvm::Error {
                void *buffers[] = {data[0], data[1],       data[2],
                                   data[3], schedule.data(), clipFactor.data(),
                                   data[0], data[2],       data[3]};
                return (segment.decayed ? decayedEntry : undecayedEntry)
                    ->second(buffers);
              }))
        return error;
    }

    auto now = Clock::now();
    double stepSeconds = seconds(now - stepStart);
    double tokensPerSecond =
        double(globalMicroBatches * batch * seqLen) / stepSeconds;
    if (rank == 0 && finite) {
      llvm::json::Object line{{"step", step},
                              {"loss", jsonNumber(loss)},
                              {"lr", lr},
                              {"grad_norm", jsonNumber(gradNorm)},
                              {"tokens_per_s", jsonNumber(tokensPerSecond)},
                              {"ranks", ranks},
                              {"slowest_rank_s", slowest},
                              {"comm_wait_s",
                               seconds(model.communicationWait)}};
      llvm::json::Array byRank;
      for (const std::vector<uint64_t> &counts : rankCounts) {
        llvm::json::Array row;
        for (uint64_t n : counts)
          row.push_back(int64_t(n));
        byRank.push_back(std::move(row));
      }
      line["modality_targets_by_rank"] = std::move(byRank);
      line["modality_share_spread"] = modalityShareSpread(rankCounts);
      for (size_t m = 0; m < modalities; ++m) {
        double count = sums[1 + modalities + m];
        line["loss." + config.modalities[m].name] =
            jsonNumber(count ? sums[1 + m] / count : 0.0);
      }
      *metrics << llvm::formatv("{0}", llvm::json::Value(std::move(line)))
               << "\n";
      metrics->flush();
    }
    if ((step - firstStep + 1) % options.checkpointEvery == 0 ||
        step == lastStep) {
      if (llvm::Error error = saveCheckpoint(step))
        return error;
      lastCheckpoint = step;
    }
    if (rank == 0 && ((step - firstStep + 1) % options.logEvery == 0 ||
                      step == firstStep || step == lastStep)) {
      double elapsed = seconds(now - runStart);
      llvm::outs() << llvm::formatv(
          "step {0}/{1} loss {2:F4} | lr {3:e2} | {4:F0} tok/s on {5} ranks "
          "| slowest rank {6:F3} s | waiting on communication {7:F3} s | "
          "modality share spread {8:F3} | elapsed {9:F1} s\n",
          step, lastStep, loss, lr, tokensPerSecond, ranks, slowest,
          seconds(model.communicationWait), modalityShareSpread(rankCounts),
          elapsed);
      llvm::outs().flush();
    }
  }
  install(nullptr);
  if (auto copies = artifact->residentStatistics(); copies && rank == 0)
    llvm::errs() << llvm::formatv(
        "momarun: rank 0's shards ({0:F1} MB) stayed in device memory: {1} "
        "uploads ({2:F1} MB), {3} downloads ({4:F1} MB) in {5} steps; the "
        "units' collectives ran over {6}\n",
        double(copies->deviceBytes) / 1e6, copies->uploads,
        double(copies->uploadedBytes) / 1e6, copies->downloads,
        double(copies->downloadedBytes) / 1e6, options.steps,
        unitComm->backend());
  return llvm::Error::success();
}
