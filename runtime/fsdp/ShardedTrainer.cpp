//===- ShardedTrainer.cpp - One model trained across ranks (FSDP) ---------===//
//
// The sharded TrainStep: each rank runs its micro-batches through the
// compiled fsdp_grad (which gathers and reduce-scatters each unit through
// ShardedModel's callbacks), the ranks all-reduce the losses and the shards'
// squared gradient norms, and each rank clips and updates its own shard in
// the optimizer's chunks (fsdp_adamw_*). The loop (TrainLoop.h) is the one
// every trainer runs.
//
//===----------------------------------------------------------------------===//

#include "runtime/fsdp/ShardedTrainer.h"

#include "lib/config/ModelStats.h"
#include "lib/support/AtomicFile.h"
#include "lib/support/Failpoint.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/ModalityBalance.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/fsdp/ShardedModel.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunLock.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/TrainLoop.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
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

/// The compiled entry points of a sharded step.
struct ShardedEntries {
  LoadedArtifact::EntryFunction grad, norm, decayed, undecayed;
  const EntryPointSpec *gradSpec = nullptr;
};

class ShardedStep : public TrainStep {
public:
  ShardedStep(const TrainOptions &options, const LoadedArtifact &artifact,
              Communicator &comm, ShardedModel &model, ShardedEntries entries,
              PackedDataset data, uint64_t dataPosition,
              std::mt19937_64 noiseRng);

  llvm::Expected<StepOutcome> run(int64_t step, double lr) override;
  llvm::Error checkpoint(int64_t completed) override;
  void rewind() override {
    dataPosition = stepDataPosition;
    noiseRng = stepNoiseRng;
  }
  int64_t tokensPerStep() const override {
    return globalMicroBatches() * manifest.batchSize * manifest.seqLen;
  }
  std::string checkpointName() const override {
    return "the shard set RUN/checkpoint.shards.json";
  }
  /// Every rank reaches a non-finite step together (the sums are
  /// all-reduced): they stop together, and rank 0 says why.
  llvm::Error stop(const std::string &message) const override {
    return llvm::make_error<CollectiveStop>(message);
  }

  llvm::Error bind();

private:
  int64_t globalMicroBatches() const {
    return config.train.microBatches * comm.size();
  }
  /// The step's sequences and which of them each rank trains: rank r the
  /// r-th M * B (MODEL_SPEC section 8), or a balanced deal.
  llvm::Error dealSequences(std::vector<std::vector<size_t>> &deal,
                            std::vector<std::vector<uint64_t>> &rankCounts);
  /// This rank's micro-batches: returns [loss sum, per-modality loss sums,
  /// per-modality target counts].
  llvm::Expected<std::vector<double>>
  runMicroBatches(const std::vector<size_t> &sequences);
  /// Runs `body(segment, [params, grads, m, v])` on each optimizer chunk of
  /// this rank's shards, over staging buffers where a segment's last chunk
  /// is short.
  template <typename Body> llvm::Error forEachChunk(Body body);
  llvm::Expected<double> squaredGradientNorm();
  llvm::Error update(int64_t step, double lr, double gradNorm);

  const TrainOptions &options;
  const LoadedArtifact &artifact;
  const Manifest &manifest;
  const ModelConfig &config;
  Communicator &comm;
  ShardedModel &model;
  ShardedEntries entries;
  PackedDataset data;
  uint64_t dataPosition, stepDataPosition;
  std::mt19937_64 noiseRng, stepNoiseRng;

  std::vector<int32_t> tokens, window;
  int32_t batchRows = 0;
  std::vector<float> noise;
  std::vector<std::vector<float>> noiseOfMicroBatch, gradOutputs;
  std::vector<void *> gradBuffers;
  std::vector<double> targetShares;
  std::vector<OptimizerSegment> segments;
  std::vector<float> stage[4];
  std::array<float, 3> schedule{};
  std::vector<float> clipFactor = {1.0f}, chunkNorm = {0.0f};
};

ShardedStep::ShardedStep(const TrainOptions &options,
                         const LoadedArtifact &artifact, Communicator &comm,
                         ShardedModel &model, ShardedEntries entries,
                         PackedDataset data, uint64_t dataPosition,
                         std::mt19937_64 noiseRng)
    : options(options), artifact(artifact), manifest(artifact.manifest()),
      config(artifact.config()), comm(comm), model(model),
      entries(std::move(entries)), data(std::move(data)),
      dataPosition(dataPosition), stepDataPosition(dataPosition),
      noiseRng(noiseRng), stepNoiseRng(noiseRng) {}

llvm::Error ShardedStep::bind() {
  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  model.gradientScale = 1.0f / float(globalMicroBatches());
  tokens.assign(batch * (seqLen + 1), 0);
  window.assign(globalMicroBatches() * batch * (seqLen + 1), 0);
  targetShares = modalityTargetShares(config);
  batchRows = int32_t(batch);
  const EntryPointSpec &gradSpec = *entries.gradSpec;
  llvm::StringMap<void *> gradArguments, gradResults;
  gradArguments["tokens"] = tokens.data();
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  for (const BufferSpec &spec : gradSpec.arguments)
    if (spec.name == kGumbelNoiseArgument) {
      noise.assign(spec.numElements(), 0.0f);
      noiseOfMicroBatch.resize(config.train.microBatches);
      gradArguments[kGumbelNoiseArgument] = noise.data();
    }
  gradOutputs = allocateResults(gradSpec, gradResults);
  auto bound = bindByName(gradSpec, gradArguments, gradResults);
  if (!bound)
    return bound.takeError();
  gradBuffers = std::move(*bound);
  // The optimizer's chunked entry points, over staging buffers when a
  // segment's last chunk is short.
  for (std::vector<float> &buffer : stage) {
    buffer.assign(manifest.shardChunkElements, 0.0f);
    if (llvm::Error error = model.keep(buffer, "an optimizer staging buffer"))
      return error;
  }
  segments = model.optimizerSegments();
  return llvm::Error::success();
}

template <typename Body> llvm::Error ShardedStep::forEachChunk(Body body) {
  Device &device = artifact.device();
  const int64_t chunk = manifest.shardChunkElements;
  for (const OptimizerSegment &segment : segments) {
    ShardedModel::Shard &shard = model.shards[segment.unit];
    for (int64_t at = segment.begin; at < segment.end; at += chunk) {
      int64_t n = std::min(chunk, segment.end - at);
      float *home[4] = {shard.params.data() + at, shard.grads.data() + at,
                        shard.firstMoments.data() + at,
                        shard.secondMoments.data() + at};
      bool staged = n < chunk;
      float *buffers[4];
      for (int k = 0; k < 4; ++k) {
        buffers[k] = staged ? stage[k].data() : home[k];
        if (!staged)
          continue;
        if (llvm::Error error = device.copy(stage[k].data(), home[k], n))
          return error;
        if (llvm::Error error =
                device.zero(stage[k].data() + n, size_t(chunk - n)))
          return error;
      }
      if (llvm::Error error = body(segment, buffers))
        return error;
      if (staged)
        for (int k = 0; k < 4; ++k)
          if (llvm::Error error = device.copy(home[k], stage[k].data(), n))
            return error;
    }
  }
  return llvm::Error::success();
}

llvm::Error
ShardedStep::dealSequences(std::vector<std::vector<size_t>> &deal,
                           std::vector<std::vector<uint64_t>> &rankCounts) {
  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  const int64_t stepSequences = globalMicroBatches() * batch;
  const int64_t perRank = config.train.microBatches * batch;
  data.stream->seek(dataPosition);
  if (llvm::Error error = data.stream->next(size_t(stepSequences), window))
    return error;
  std::vector<std::vector<uint64_t>> sequenceCounts;
  for (int64_t i = 0; i < stepSequences; ++i)
    sequenceCounts.push_back(config.countTargetsByModality(
        llvm::ArrayRef<int32_t>(window).slice(i * (seqLen + 1), seqLen + 1)));
  deal.assign(comm.size(), {});
  if (options.balanceModalities) {
    deal = balanceByModality(sequenceCounts, targetShares, comm.size(),
                             size_t(perRank));
  } else {
    for (int64_t i = 0; i < stepSequences; ++i)
      deal[i / perRank].push_back(size_t(i));
  }
  const size_t modalities = config.modalities.size();
  rankCounts.assign(comm.size(), std::vector<uint64_t>(modalities, 0));
  for (int r = 0; r < comm.size(); ++r)
    for (size_t i : deal[r])
      for (size_t m = 0; m < modalities; ++m)
        rankCounts[r][m] += sequenceCounts[i][m];
  return llvm::Error::success();
}

llvm::Expected<std::vector<double>>
ShardedStep::runMicroBatches(const std::vector<size_t> &sequences) {
  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  const size_t modalities = config.modalities.size();
  std::vector<double> sums(1 + 2 * modalities, 0.0);
  for (int64_t micro = 0; micro < config.train.microBatches; ++micro) {
    for (int64_t row = 0; row < batch; ++row) {
      size_t sequence = sequences[size_t(micro * batch + row)];
      std::copy_n(window.begin() + sequence * (seqLen + 1), seqLen + 1,
                  tokens.begin() + row * (seqLen + 1));
    }
    if (!noise.empty())
      noise = noiseOfMicroBatch[micro];
    if (llvm::Error error = entries.grad(gradBuffers.data()))
      return std::move(error);
    sums[0] += gradOutputs[0][0];
    std::vector<uint64_t> counts = config.countTargetsByModality(tokens);
    for (size_t m = 0; m < modalities; ++m) {
      sums[1 + m] += double(gradOutputs[1 + m][0]) * double(counts[m]);
      sums[1 + modalities + m] += double(counts[m]);
    }
  }
  return sums;
}

llvm::Expected<double> ShardedStep::squaredGradientNorm() {
  double squares = 0;
  if (llvm::Error error = forEachChunk(
          [&](const OptimizerSegment &, float **chunk) -> llvm::Error {
            void *buffers[] = {chunk[1], chunkNorm.data()};
            if (llvm::Error error = entries.norm(buffers))
              return error;
            squares += double(chunkNorm[0]) * double(chunkNorm[0]);
            return llvm::Error::success();
          }))
    return std::move(error);
  return squares;
}

llvm::Error ShardedStep::update(int64_t step, double lr, double gradNorm) {
  const TrainConfig &hyper = config.train;
  schedule = adamwSchedule(hyper, lr, step);
  clipFactor[0] = hyper.gradClip > 0 ? std::min(1.0f, float(hyper.gradClip) /
                                                          (float(gradNorm) +
                                                           1e-6f))
                                     : 1.0f;
  return forEachChunk(
      [&](const OptimizerSegment &segment, float **chunk) -> llvm::Error {
        void *buffers[] = {chunk[0],        chunk[1],          chunk[2],
                           chunk[3],        schedule.data(),   clipFactor.data(),
                           chunk[0],        chunk[2],          chunk[3]};
        return (segment.decayed ? entries.decayed : entries.undecayed)(buffers);
      });
}

llvm::Expected<StepOutcome> ShardedStep::run(int64_t step, double lr) {
  const int rank = comm.rank(), ranks = comm.size();
  const size_t modalities = config.modalities.size();
  const Clock::time_point stepStart = Clock::now();
  stepDataPosition = dataPosition;
  stepNoiseRng = noiseRng;
  model.communicationWait = {};
  model.zeroGradients();
  // Rank r's micro-batches are the global ones r*M .. r*M + M-1; the router
  // noise is drawn for all of them in order, as one rank would.
  if (!noise.empty())
    for (int64_t g = 0; g < globalMicroBatches(); ++g) {
      sampleGumbelNoise(noiseRng, noise);
      if (g / config.train.microBatches == rank)
        noiseOfMicroBatch[g % config.train.microBatches] = noise;
    }
  std::vector<std::vector<size_t>> deal;
  std::vector<std::vector<uint64_t>> rankCounts;
  if (llvm::Error error = dealSequences(deal, rankCounts))
    return std::move(error);
  llvm::Expected<std::vector<double>> sums = runMicroBatches(deal[rank]);
  if (!sums)
    return sums.takeError();
  dataPosition += uint64_t(globalMicroBatches() * manifest.batchSize);
  const Clock::time_point computeEnd = Clock::now();

  // The global gradient norm from the shards' squared norms, and each
  // rank's compute time, to find the slowest.
  llvm::Expected<double> squares = squaredGradientNorm();
  if (!squares)
    return squares.takeError();
  sums->push_back(*squares);
  std::vector<double> times(ranks, 0.0);
  times[rank] = seconds(computeEnd - stepStart);
  sums->insert(sums->end(), times.begin(), times.end());
  if (llvm::Error error =
          comm.allReduceSum(sums->data(), sums->size(), "the step's sums"))
    return std::move(error);
  StepOutcome outcome;
  outcome.loss = (*sums)[0] / double(globalMicroBatches());
  outcome.gradNorm = std::sqrt((*sums)[1 + 2 * modalities]);
  double slowest = 0;
  for (int r = 0; r < ranks; ++r)
    slowest = std::max(slowest, (*sums)[2 + 2 * modalities + r]);
  // All-reduced: every rank sees the same and decides the same.
  if (!std::isfinite(outcome.loss) || !std::isfinite(outcome.gradNorm)) {
    outcome.nonFinite = llvm::formatv("the loss is {0} and the gradient norm "
                                      "{1}",
                                      outcome.loss, outcome.gradNorm)
                            .str();
    return outcome;
  }
  if (llvm::Error error = update(step, lr, outcome.gradNorm))
    return std::move(error);

  const double spread = modalityShareSpread(rankCounts);
  const double wait = seconds(model.communicationWait);
  outcome.metrics = llvm::json::Object{{"ranks", ranks},
                                       {"slowest_rank_s", slowest},
                                       {"comm_wait_s", wait},
                                       {"modality_share_spread", spread}};
  llvm::json::Array byRank;
  for (const std::vector<uint64_t> &counts : rankCounts) {
    llvm::json::Array row;
    for (uint64_t n : counts)
      row.push_back(int64_t(n));
    byRank.push_back(std::move(row));
  }
  outcome.metrics["modality_targets_by_rank"] = std::move(byRank);
  std::vector<double> modalitySum((*sums).begin() + 1,
                                  (*sums).begin() + 1 + modalities);
  std::vector<uint64_t> modalityCount;
  for (size_t m = 0; m < modalities; ++m)
    modalityCount.push_back(uint64_t((*sums)[1 + modalities + m]));
  modalityMetrics(config, modalitySum, modalityCount, outcome);
  outcome.progress += llvm::formatv(
      " | on {0} ranks: slowest {1:F3} s, waiting on communication {2:F3} s, "
      "modality share spread {3:F3}",
      ranks, slowest, wait, spread);
  return outcome;
}

llvm::Error ShardedStep::checkpoint(int64_t completed) {
  std::vector<UnitShards> shards;
  for (ShardedModel::Shard &shard : model.shards) {
    for (std::vector<float> *buffer :
         {&shard.params, &shard.firstMoments, &shard.secondMoments})
      if (llvm::Error error = artifact.device().copyToHost(buffer->data()))
        return error;
    shards.push_back({shard.params, shard.firstMoments, shard.secondMoments});
  }
  CheckpointProgress progress;
  progress.step = completed;
  progress.dataPosition = dataPosition;
  progress.rng = rngState(noise.empty() ? nullptr : &noiseRng);
  progress.model = manifest.model;
  progress.globalBatch = globalMicroBatches() * manifest.batchSize;
  const int rank = comm.rank(), ranks = comm.size();
  // Each rank's file of the new set, synced under a name of its own: the
  // committed set's files are not touched.
  llvm::Expected<ShardFile> mine = writeShardCheckpoint(
      options.runDirectory, rank, ranks, manifest, shards, progress);
  if (!mine)
    return mine.takeError();
  failpoint(failpoints::kBetweenRenames, rank);
  // Every file's size and checksum to rank 0, exactly (32-bit halves in
  // doubles); the sum is also the barrier after which every file is in
  // place.
  std::vector<double> records(3 * ranks, 0.0);
  records[3 * rank] = double(mine->bytes);
  records[3 * rank + 1] = double(mine->xxh3 >> 32);
  records[3 * rank + 2] = double(mine->xxh3 & 0xffffffffu);
  if (llvm::Error error = comm.allReduceSum(records.data(), records.size(),
                                            "the checkpoint's shard records"))
    return error;
  if (rank == 0) {
    std::vector<ShardFile> files;
    for (int r = 0; r < ranks; ++r)
      files.push_back(
          {llvm::sys::path::filename(shardCheckpointPath(
                                         options.runDirectory, completed, r,
                                         ranks))
               .str(),
           uint64_t(records[3 * r]),
           uint64_t(records[3 * r + 1]) << 32 | uint64_t(records[3 * r + 2])});
    failpoint(failpoints::kBeforeSetManifest, rank);
    // The set becomes the checkpoint in one rename; the older ones go.
    if (llvm::Error error =
            commitShardSet(options.runDirectory, completed, files))
      return error;
  }
  // No rank goes on past a checkpoint that is not committed.
  return comm.barrier("the checkpoint commit");
}

/// Refuses, before anything is allocated, a run whose shards do not fit:
/// what this rank keeps (momac --report --ranks R) times the ranks that
/// share this machine's memory, against --memory-limit or the memory; and
/// this rank's part against its GPU's free memory.
llvm::Error checkShardedMemory(const TrainOptions &options,
                               const LoadedArtifact &artifact, int ranks) {
  const Manifest &manifest = artifact.manifest();
  const int64_t rankBytes =
      computeShardedStateBytes(artifact.config(), ranks).totalBytes();
  int64_t local = ranks;
  if (const char *size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
    local = std::max<int64_t>(1, std::atoll(size));
  if (llvm::Error error = checkMemoryEstimate(
          rankBytes * local,
          llvm::formatv("training {0} on {1} ranks, {2} of them on this "
                        "machine (each: its shards of the weights, gradients "
                        "and AdamW moments, and two gathered units)",
                        manifest.model, ranks, local)
              .str(),
          options.memoryLimitBytes))
    return error;
  // Each rank's GPU holds its own shards (DeviceChoice.h).
  return artifact.device().checkMemory(
      rankBytes, llvm::formatv("training {0} on {1} ranks (this rank's shards "
                               "and two gathered units)",
                               manifest.model, ranks)
                     .str());
}

/// The compiled entry points of the sharded step, or an error naming the
/// one that is missing.
llvm::Expected<ShardedEntries> shardedEntries(const LoadedArtifact &artifact) {
  ShardedEntries entries;
  std::pair<const char *, LoadedArtifact::EntryFunction *> wanted[] = {
      {"fsdp_grad", &entries.grad},
      {"fsdp_grad_norm", &entries.norm},
      {"fsdp_adamw_decayed", &entries.decayed},
      {"fsdp_adamw_undecayed", &entries.undecayed}};
  for (auto [name, function] : wanted) {
    auto entry = artifact.entryPoint(name);
    if (!entry)
      return entry.takeError();
    *function = entry->second;
    if (function == &entries.grad)
      entries.gradSpec = entry->first;
  }
  return entries;
}

/// This rank's shards of the starting state (a checkpoint of any rank
/// count, --init or momarun's init), one parameter at a time: a rank holds,
/// beyond its shard, at most one parameter (or one FSDP unit of a shard set
/// being put back together). Returns the checkpoint's progress (zero for a
/// fresh run, whose metrics start over and whose RUN/run.json is written).
llvm::Expected<TrainingState> loadShards(const TrainOptions &options,
                                         const LoadedArtifact &artifact,
                                         ShardedModel &model, int rank,
                                         int ranks) {
  const Manifest &manifest = artifact.manifest();
  const ModelConfig &config = artifact.config();
  const std::string metricsPath = options.runDirectory + "/metrics.jsonl";
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
    if (llvm::Error error = checkResumedBatch(
            *read, int64_t(ranks) * config.train.microBatches * manifest.batchSize,
            llvm::formatv("{0} ranks x {1} micro-batch(es) x {2} sequences",
                          ranks, config.train.microBatches, manifest.batchSize)
                .str(),
            options.allowBatchChange, read->source))
      return std::move(error);
    if (rank == 0)
      if (llvm::Error error = truncateMetrics(metricsPath, read->step))
        return std::move(error);
    return read;
  }
  // The moments start at zero, as the shards do.
  auto keep = [&](size_t p, std::vector<float> &values) {
    model.keepSlice(p, values, &ShardedModel::Shard::params);
  };
  const uint64_t seed = options.seed.value_or(uint64_t(config.train.seed));
  if (options.initWeights.empty())
    Weights::initializeEach(manifest, seed, keep);
  else if (llvm::Error error =
               Weights::loadEach(manifest, options.initWeights, keep))
    return std::move(error);
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
            manifest.batchSize * manifest.seqLen * config.train.microBatches *
                ranks,
            options.dataPositionFrom, stageOneSteps))
      return std::move(error);
  }
  return std::move(state);
}

/// What each rank holds (momac --report --ranks R predicts the same).
RankMemory rankMemory(const ShardedModel &model) {
  RankMemory memory;
  for (const ShardedModel::Shard &shard : model.shards)
    memory.parameterBytes += shard.shardElements * int64_t(sizeof(float));
  memory.gradientBytes = memory.parameterBytes;
  memory.optimizerBytes = 2 * memory.parameterBytes;
  memory.gatheredBytes = 2 * model.largestUnit * int64_t(sizeof(float));
  memory.largestUnit = model.largestUnitName;
  return memory;
}

} // namespace

llvm::Error momac::trainSharded(const TrainOptions &options,
                                Communicator &comm) {
  const int rank = comm.rank(), ranks = comm.size();
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
  if (rank == 0)
    llvm::outs() << "momarun: " << artifact->gemmLibraries() << "\n";
  const Manifest &manifest = artifact->manifest();
  if (manifest.shardUnits.empty())
    return fsdpError(options.artifact +
                     ": compiled without --fsdp, so it cannot train on " +
                     std::to_string(ranks) +
                     " ranks; compile it with momac MODEL.json --fsdp -o ART");
  if (llvm::Error error = checkShardedMemory(options, *artifact, ranks))
    return error;
  auto install = reinterpret_cast<void (*)(const MomartFsdpCallbacks *)>(
      artifact->symbol("momart_fsdp_install"));
  if (!install)
    return fsdpError(options.artifact +
                     "/model.so: no momart_fsdp_install (not an FSDP artifact)");
  llvm::Expected<ShardedEntries> entries = shardedEntries(*artifact);
  if (!entries)
    return entries.takeError();
  // One writer per run directory (rank 0 holds it for all), for the whole
  // run.
  std::optional<RunLock> lock;
  if (rank == 0) {
    llvm::Expected<RunLock> acquired =
        RunLock::acquire(options.runDirectory, "train");
    if (!acquired)
      return acquired.takeError();
    lock.emplace(std::move(*acquired));
  }
  if (llvm::Error error = comm.barrier("the run directory's lock"))
    return error;
  if (std::error_code ec =
          llvm::sys::fs::create_directories(options.runDirectory))
    return fsdpError(options.runDirectory + ": " + ec.message());
  // What an interrupted checkpoint write left (rank 0: before any rank
  // can write, which needs a step with it).
  if (rank == 0)
    if (unsigned stale = removeInterruptedCheckpointWrites(options.runDirectory))
      llvm::errs() << llvm::formatv("momarun: removed {0} temporary file(s) "
                                    "of an interrupted checkpoint write\n",
                                    stale);
  setFailpointRank(rank);

  // The units' collectives: the device's own (NCCL between GPUs) or the
  // ranks' (MPI between host buffers; also a CUDA emulation's).
  llvm::Expected<std::unique_ptr<Communicator>> own =
      artifact->device().unitCommunicator(comm);
  if (!own)
    return own.takeError();
  Communicator &unitComm = *own ? **own : comm;
  ShardedModel model(manifest, artifact->device(), unitComm);
  llvm::Expected<TrainingState> start =
      loadShards(options, *artifact, model, rank, ranks);
  if (!start)
    return start.takeError();
  const uint64_t seed =
      options.seed.value_or(uint64_t(artifact->config().train.seed));
  std::mt19937_64 noiseRng(seed ^ 0x9e3779b97f4a7c15ULL);
  const bool routerNoise =
      llvm::any_of(entries->gradSpec->arguments, [](const BufferSpec &spec) {
        return spec.name == kGumbelNoiseArgument;
      });
  if (options.resume && routerNoise) {
    std::istringstream stream(start->rng);
    if (!(stream >> noiseRng))
      return fsdpError(start->source +
                       ": metadata lacks the router-noise RNG state (rng)");
  }
  if (llvm::Error error = model.placeShards())
    return error;
  MomartFsdpCallbacks callbacks = model.callbacks();
  install(&callbacks);
  reportRankMemory(llvm::outs(), options.runDirectory, rank, ranks,
                   unitComm.backend(), rankMemory(model));

  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  ShardedStep step(options, *artifact, comm, model, std::move(*entries),
                   std::move(*data), start->dataPosition, noiseRng);
  if (llvm::Error error = step.bind())
    return error;
  llvm::Expected<MetricsLog> metrics = MetricsLog::open(
      options.runDirectory + "/metrics.jsonl", /*leader=*/rank == 0);
  if (!metrics)
    return metrics.takeError();
  TrainLoopOptions loop;
  loop.schedule = artifact->config().train;
  loop.firstStep = start->step + 1;
  loop.steps = options.steps;
  loop.checkpointEvery = options.checkpointEvery;
  loop.logEvery = options.logEvery;
  loop.skipNonFinite = options.skipNonFinite;
  loop.lastCheckpoint = options.resume ? start->step : 0;
  loop.leader = rank == 0;
  loop.redrawOnTerminal = ranks == 1;
  if (llvm::Error error = runTrainLoop(step, *metrics, loop))
    return error;
  install(nullptr);
  if (auto copies = artifact->device().copies(); copies && rank == 0)
    llvm::errs() << llvm::formatv(
        "momarun: rank 0's shards ({0:F1} MB) stayed in device memory: {1} "
        "uploads ({2:F1} MB), {3} downloads ({4:F1} MB) in {5} steps; the "
        "units' collectives ran over {6}\n",
        double(copies->deviceBytes) / 1e6, copies->uploads,
        double(copies->uploadedBytes) / 1e6, copies->downloads,
        double(copies->downloadedBytes) / 1e6, options.steps,
        unitComm.backend());
  return llvm::Error::success();
}
