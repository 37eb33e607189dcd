//===- TrainCommands.cpp - train, train-aux, ckpt ------------------------===//

#include "tools/momarun/Commands.h"

#include "lib/support/Escape.h"
#include "runtime/comm/Communicator.h"
#include "runtime/fsdp/ShardedTrainer.h"
#include "runtime/train/AuxRouterTrainer.h"
#include "runtime/train/Trainer.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

using namespace momac;
using namespace momac::momarun;
namespace cl = llvm::cl;

cl::SubCommand momac::momarun::trainCommand("train",
                            "Train with the compiled gradient and AdamW "
                            "steps (MODEL_SPEC section 7)");


cl::SubCommand momac::momarun::trainAuxCommand(
    "train-aux", "Train the auxiliary routers of a trained model (MODEL_SPEC "
                 "section 6), the model frozen");


cl::SubCommand momac::momarun::ckptCommand(
    "ckpt", "Checkpoint tools: `ckpt consolidate RUN/ -o W.safetensors` puts "
            "the shard set of a run on several ranks (or its one-rank "
            "checkpoint) into one MODEL_SPEC checkpoint");


namespace {

cl::opt<std::string> trainArtifact(cl::Positional, cl::Required,
                                   cl::desc("<artifact directory>"),
                                   cl::sub(trainCommand),
                                   cl::cat(momarunCategory()));
cl::opt<std::string> trainData("data", cl::Required,
                               cl::desc("Megatron indexed dataset prefix"),
                               cl::value_desc("prefix"), cl::sub(trainCommand),
                               cl::cat(momarunCategory()));
cl::opt<int64_t> trainSteps("steps", cl::Required,
                            cl::desc("Steps to run, at least 1 (the schedule "
                                     "still spans train.total_steps)"),
                            cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<std::string> trainOut("out", cl::Required,
                              cl::desc("Run directory: metrics.jsonl, "
                                       "checkpoint.safetensors"),
                              cl::value_desc("dir"), cl::sub(trainCommand),
                              cl::cat(momarunCategory()));
cl::opt<std::string> trainInit("init",
                               cl::desc("Initial weights (default: momarun "
                                        "init with --seed)"),
                               cl::value_desc("file"), cl::sub(trainCommand),
                               cl::cat(momarunCategory()));
cl::opt<uint64_t> trainSeed("seed", cl::init(0),
                            cl::desc("Seed of the initial weights and of the "
                                     "router noise (default: train.seed)"),
                            cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<std::string> trainDataPositionFrom(
    "data-position-from",
    cl::desc("Start the data stream where this checkpoint's run stopped "
             "(its data_position), e.g. stage 1 of an upcycled model; the "
             "optimizer and the LR schedule start fresh"),
    cl::value_desc("checkpoint"), cl::sub(trainCommand),
    cl::cat(momarunCategory()));
cl::opt<bool> trainResume("resume",
                          cl::desc("Continue from the run's latest "
                                   "checkpoint: RUN/checkpoint.safetensors, "
                                   "or the shard set of a run on several "
                                   "ranks; on any number of ranks"),
                          cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<bool> trainAllowBatchChange(
    "allow-batch-change",
    cl::desc("With --resume: continue even when this run takes another number "
             "of sequences per step than the run that wrote the checkpoint "
             "(ranks x train.micro_batches x train.batch_size), which changes "
             "the effective batch"),
    cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> trainCheckpointEvery(
    "checkpoint-every", cl::init(100),
    cl::desc("Steps between checkpoints, at least 1 (one is always written "
             "at the end; default 100)"),
    cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> trainSkipNonFinite(
    "skip-nonfinite", cl::init(0),
    cl::desc("Skip the update of up to N steps whose loss or gradient is "
             "NaN or infinite, logged (default 0: the first such step stops "
             "training with an error, after checkpointing the weights from "
             "before it)"),
    cl::value_desc("N"), cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<double> trainMemoryLimit(
    "memory-limit",
    cl::desc("Refuse to start when the training state (weights, gradients, "
             "AdamW moments) needs more than this many GB, > 0 (default: "
             "the machine's physical memory)"),
    cl::value_desc("GB"), cl::sub(trainCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> trainLogEvery(
    "log-every", cl::init(10),
    cl::desc("Steps between progress lines when not on a terminal, at least "
             "1 (default 10)"),
    cl::sub(trainCommand), cl::cat(momarunCategory()));

cl::opt<double> trainCommTimeout(
    "comm-timeout", cl::init(60.0),
    cl::desc("On several ranks (mpirun): seconds a collective may take before "
             "the run stops with an error naming it, because another rank is "
             "lost or stalled; on GPUs (NCCL), also how long a step may wait "
             "for the GPU (default 60)"),
    cl::value_desc("seconds"), cl::sub(trainCommand),
    cl::cat(momarunCategory()));

cl::opt<bool> trainFsdp(
    "fsdp",
    cl::desc("Train with the sharded step (an artifact compiled with momac "
             "--fsdp) also on one rank, its gathers and reduce-scatters over "
             "a communicator of one (NCCL on a GPU): checks the sharded "
             "path against the plain one (several ranks always shard)"),
    cl::sub(trainCommand), cl::cat(momarunCategory()));

cl::opt<bool> trainBalanceModalities(
    "balance-modalities",
    cl::desc("On several ranks (mpirun): deal each step's sequences so that "
             "every rank's text:image token mix stays near the model's "
             "text:image expert ratio (the MoMa paper's fix for stragglers); "
             "without it, rank r trains the r-th share of the step's "
             "sequences (MODEL_SPEC section 8)"),
    cl::sub(trainCommand), cl::cat(momarunCategory()));

cl::opt<std::string> trainAuxArtifact(cl::Positional, cl::Required,
                                      cl::desc("<artifact directory>"),
                                      cl::sub(trainAuxCommand),
                                      cl::cat(momarunCategory()));
cl::opt<std::string> trainAuxWeights(
    "weights", cl::Required,
    cl::desc("The trained model (weights or checkpoint); training starts "
             "from its aux routers"),
    cl::value_desc("file"), cl::sub(trainAuxCommand), cl::cat(momarunCategory()));
cl::opt<std::string> trainAuxData("data", cl::Required,
                                  cl::desc("Megatron indexed dataset prefix"),
                                  cl::value_desc("prefix"),
                                  cl::sub(trainAuxCommand),
                                  cl::cat(momarunCategory()));
cl::opt<int64_t> trainAuxSteps(
    "steps", cl::Required,
    cl::desc("Steps of train.batch_size sequences, at least 1; the LR "
             "schedule of train.* spans them (warm-up: at most a tenth)"),
    cl::sub(trainAuxCommand), cl::cat(momarunCategory()));
cl::opt<std::string> trainAuxOut(
    "out", cl::Required,
    cl::desc("Run directory: metrics.jsonl (per router: bce, accuracy, "
             "precision, recall), weights.safetensors"),
    cl::value_desc("dir"), cl::sub(trainAuxCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> trainAuxSkipNonFinite(
    "skip-nonfinite", cl::init(0),
    cl::desc("Skip the update of up to N steps whose loss or gradient is "
             "NaN or infinite, logged (default 0: the first such step stops "
             "with an error; weights.safetensors keeps the routers from "
             "before it)"),
    cl::value_desc("N"), cl::sub(trainAuxCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> trainAuxLogEvery(
    "log-every", cl::init(10),
    cl::desc("Steps between progress lines, at least 1 (default 10)"),
    cl::sub(trainAuxCommand), cl::cat(momarunCategory()));

cl::list<std::string> ckptArguments(cl::Positional, cl::OneOrMore,
                                    cl::desc("consolidate <run directory>"),
                                    cl::sub(ckptCommand),
                                    cl::cat(momarunCategory()));
cl::opt<std::string> ckptOutput("o", cl::Required,
                                cl::desc("The consolidated checkpoint to write"),
                                cl::value_desc("W.safetensors"),
                                cl::sub(ckptCommand), cl::cat(momarunCategory()));

} // namespace

int momac::momarun::runTrain() {
  if (trainSkipNonFinite < 0)
    return fail(usageError("--skip-nonfinite must be at least 0"));
  if (trainSteps < 1 || trainCheckpointEvery < 1 || trainLogEvery < 1)
    return fail(usageError(
        "--steps, --checkpoint-every and --log-every must be at least 1"));
  if (!trainInit.empty() && trainResume)
    return fail(usageError("give --init or --resume, not both: --resume "
                             "continues from the run's latest checkpoint"));
  if (!trainDataPositionFrom.empty() && trainResume)
    return fail(usageError("give --data-position-from or --resume, not "
                             "both: --resume continues the run's own data "
                             "position"));
  // The run's own files must not be one of its inputs (resuming reads its
  // checkpoint on purpose).
  std::vector<std::string> inputs = artifactFiles(trainArtifact);
  inputs.insert(inputs.end(), {trainInit, trainDataPositionFrom,
                               trainData + ".bin", trainData + ".idx"});
  std::vector<std::string> outputs;
  for (const char *name : {"checkpoint.safetensors", "checkpoint.shards.json",
                           "metrics.jsonl", "run.json"})
    outputs.push_back(trainOut + "/" + name);
  if (llvm::Error error = refuseInputsAsOutputs(outputs, inputs))
    return fail(std::move(error));
  TrainOptions options;
  options.artifact = trainArtifact;
  options.dataPositionFrom = trainDataPositionFrom;
  options.dataPrefix = trainData;
  options.runDirectory = trainOut;
  options.initWeights = trainInit;
  if (trainSeed.getNumOccurrences())
    options.seed = trainSeed;
  options.steps = trainSteps;
  options.resume = trainResume;
  options.allowBatchChange = trainAllowBatchChange;
  options.checkpointEvery = trainCheckpointEvery;
  options.logEvery = trainLogEvery;
  options.skipNonFinite = trainSkipNonFinite;
  options.balanceModalities = trainBalanceModalities;
  if (trainMemoryLimit.getNumOccurrences()) {
    if (!(trainMemoryLimit > 0))
      return fail(usageError("--memory-limit must be a number of GB > 0"));
    options.memoryLimitBytes = int64_t(trainMemoryLimit * 1e9);
  }
  if (!(trainCommTimeout > 0))
    return fail(usageError("--comm-timeout must be a number of seconds > 0"));
  // Several ranks when an MPI launcher started this process; one without.
  llvm::Expected<std::unique_ptr<Communicator>> comm =
      createProcessCommunicator(std::chrono::milliseconds(
          int64_t(trainCommTimeout * 1000)));
  if (!comm)
    return fail(comm.takeError());
  if ((*comm)->size() == 1 && !trainFsdp) {
    if (options.balanceModalities)
      llvm::WithColor::warning(llvm::errs(), "momarun")
          << "--balance-modalities deals sequences among ranks; on one rank "
             "it changes nothing\n";
    if (llvm::Error error = train(options))
      return fail(std::move(error));
    return 0;
  }
  int status = 0;
  if (llvm::Error error = trainSharded(options, **comm)) {
    Communicator &ranks = **comm;
    status = 1;
    llvm::handleAllErrors(
        std::move(error),
        [&](const CollectiveStop &stop) {
          // Every rank stops here together: rank 0 says why.
          if (ranks.rank() == 0)
            llvm::WithColor::error(llvm::errs(), "momarun")
                << escapeControlCharacters(stop.message()) << "\n";
        },
        [&](const llvm::ErrorInfoBase &other) {
          // The other ranks would wait in their next collective: stop them
          // all.
          llvm::WithColor::error(llvm::errs(), "momarun")
              << "rank " << ranks.rank() << " of " << ranks.size() << ": "
              << escapeControlCharacters(other.message()) << "\n";
          llvm::errs().flush();
          ranks.abort(1);
        });
  }
  return status;
}

int momac::momarun::runTrainAux() {
  if (trainAuxSteps < 1 || trainAuxLogEvery < 1)
    return fail(usageError("--steps and --log-every must be at least 1"));
  if (trainAuxSkipNonFinite < 0)
    return fail(usageError("--skip-nonfinite must be at least 0"));
  std::vector<std::string> inputs = artifactFiles(trainAuxArtifact);
  inputs.insert(inputs.end(), {trainAuxWeights, trainAuxData + ".bin",
                               trainAuxData + ".idx"});
  if (llvm::Error error = refuseInputsAsOutputs(
          {trainAuxOut + "/weights.safetensors", trainAuxOut + "/metrics.jsonl"},
          inputs))
    return fail(std::move(error));
  AuxTrainOptions options;
  options.artifact = trainAuxArtifact;
  options.weights = trainAuxWeights;
  options.dataPrefix = trainAuxData;
  options.runDirectory = trainAuxOut;
  options.steps = trainAuxSteps;
  options.logEvery = trainAuxLogEvery;
  options.skipNonFinite = trainAuxSkipNonFinite;
  if (llvm::Error error = trainAuxRouters(options))
    return fail(std::move(error));
  return 0;
}

int momac::momarun::runCkpt() {
  if (ckptArguments.size() != 2 || ckptArguments[0] != "consolidate")
    return fail(usageError("usage: momarun ckpt consolidate RUN/ -o "
                             "W.safetensors"));
  // Every file of the run's checkpoints is an input.
  std::vector<std::string> inputs;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(ckptArguments[1], ec), end;
       it != end && !ec; it.increment(ec))
    if (llvm::sys::path::filename(it->path()).starts_with("checkpoint."))
      inputs.push_back(it->path());
  if (llvm::Error error = refuseInputsAsOutputs({ckptOutput}, inputs))
    return fail(std::move(error));
  llvm::Expected<TrainingState> state =
      readTrainingCheckpoint(ckptArguments[1]);
  if (!state)
    return fail(state.takeError());
  if (llvm::Error error = writeSingleCheckpoint(
          ckptOutput, state->parameters, state->weights, state->firstMoments,
          state->secondMoments, *state))
    return fail(std::move(error));
  llvm::outs() << "wrote " << ckptOutput << ": " << state->parameters.size()
               << " parameters with their AdamW moments, step "
               << state->step << ", from " << state->source << "\n";
  return 0;
}

