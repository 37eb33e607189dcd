//===- MutationFuzzer.cpp - Fuzz the readers of users' files --------------===//
//
//   momac-fuzz TARGET --corpus DIR [--seconds S] [--seed N]
//
// A small mutation fuzzer in the manner of libFuzzer, built by the project's
// own compiler with the libraries under test, so that CI needs no second
// toolchain (libFuzzer wants clang's -fsanitize=fuzzer over the code it
// fuzzes; Debian's clang 14 has it). Each iteration takes a
// seed file of the target's corpus, applies a few random mutations (bit
// flips, byte overwrites with interesting values, insertions, deletions,
// duplicated ranges, splices with another seed, numbers rewritten in text)
// and hands the result to the target's reader. Every reader must return a
// value or an error, never crash; a crash leaves the input in
// crash-TARGET-<hash> in the working directory for reproduction
// (`momac-fuzz TARGET --reproduce FILE`).
//
//===----------------------------------------------------------------------===//

#include "lib/artifact/Manifest.h"
#include "lib/config/ModelConfig.h"
#include "lib/config/Parameters.h"
#include "lib/safetensors/Safetensors.h"
#include "runtime/data/Corpus.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Signals.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace momac;
namespace cl = llvm::cl;

namespace {

cl::opt<std::string> targetName(cl::Positional, cl::Required,
                                cl::desc("<description | safetensors | "
                                         "megatron-index | manifest | prompt "
                                         "| run-metrics | run-record | "
                                         "shard-layout>"));
cl::opt<std::string> corpusDir("corpus", cl::desc("Seed inputs, one per file"),
                               cl::value_desc("dir"));
cl::opt<double> seconds("seconds", cl::init(4),
                        cl::desc("How long to fuzz (default 4)"));
cl::opt<uint64_t> seed("seed", cl::init(1),
                       cl::desc("Seed of the mutations (default 1)"));
cl::opt<std::string> reproduce("reproduce",
                               cl::desc("Run the target once on this file"),
                               cl::value_desc("file"));

/// A scratch directory for the targets that read files by path.
std::string scratch;

void ignore(llvm::Error error) { llvm::consumeError(std::move(error)); }

void writeFile(const std::string &path, llvm::StringRef bytes) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  os << bytes;
}

void fuzzDescription(llvm::StringRef bytes) {
  llvm::Expected<ModelConfig> config = parseModelConfig(bytes);
  if (!config)
    return ignore(config.takeError());
  // A valid description: what momac derives from it must not crash either.
  (void)listParameters(*config);
  (void)config->countTargetsByModality({});
}

void fuzzSafetensors(llvm::StringRef bytes) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::fromBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(bytes, "fuzz.safetensors"));
  if (!file)
    return ignore(file.takeError());
  for (llvm::StringRef name : file->names())
    (void)name.size();
}

void fuzzMegatronIndex(llvm::StringRef bytes) {
  // The index is the input; the data file is 4 KiB of token 1.
  std::string prefix = scratch + "/fuzz";
  writeFile(prefix + ".idx", bytes);
  static bool binWritten = false;
  if (!binWritten) {
    std::vector<int32_t> ones(1024, 1);
    writeFile(prefix + ".bin",
              llvm::StringRef(reinterpret_cast<const char *>(ones.data()),
                              ones.size() * sizeof(int32_t)));
    binWritten = true;
  }
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(prefix);
  if (!dataset)
    return ignore(dataset.takeError());
  // An index that opened is consistent: reading every sequence is safe.
  for (size_t i = 0; i < dataset->numSequences() && i < 64; ++i)
    (void)dataset->sequence(i);
}

void fuzzManifest(llvm::StringRef bytes) {
  llvm::Expected<Manifest> manifest = parseManifest(bytes, "fuzz.json");
  if (!manifest)
    return ignore(manifest.takeError());
  for (const EntryPointSpec &entry : manifest->entryPoints)
    for (const BufferSpec &buffer : entry.arguments)
      (void)buffer.numElements();
  for (const ManifestParameter &parameter : manifest->parameters)
    (void)parameter.numElements();
}

/// A small model, for the readers that check ids against one.
const ModelConfig &fuzzModel() {
  static const ModelConfig config = [] {
    llvm::Expected<ModelConfig> parsed = parseModelConfig(R"({
      "name": "fuzz", "vocab_size": 512, "d_model": 16, "n_layers": 1,
      "n_heads": 2, "ffn_hidden": 32, "seq_len": 8,
      "modalities": [{"name": "text"},
                     {"name": "image", "token_ranges": [[256, 512]]}]})");
    if (!parsed) {
      llvm::errs() << llvm::toString(parsed.takeError()) << "\n";
      std::abort();
    }
    return std::move(*parsed);
  }();
  return config;
}

/// generate's --prompt and corpus's --input, as JSONL.
void fuzzPrompt(llvm::StringRef bytes) {
  std::string path = scratch + "/prompt.jsonl";
  writeFile(path, bytes);
  llvm::Expected<std::vector<std::vector<int64_t>>> documents =
      readTokenDocuments(fuzzModel(), path);
  if (!documents)
    return ignore(documents.takeError());
}

/// plot's inputs: a run's metrics.jsonl (with a valid run.json) or its
/// run.json (with valid metrics).
void fuzzRun(llvm::StringRef metrics, llvm::StringRef record) {
  std::string run = scratch + "/run";
  llvm::sys::fs::create_directories(run);
  writeFile(run + "/metrics.jsonl", metrics);
  writeFile(run + "/run.json", record);
  llvm::Expected<RunCurves> curves = readRunCurves(run);
  if (!curves)
    return ignore(curves.takeError());
  (void)plotRunCurves({*curves}, 3);
}

constexpr llvm::StringLiteral kRunRecord =
    R"({"model":"fuzz","tokens_per_step":64,"train_flops_per_token":1000})";
constexpr llvm::StringLiteral kMetrics =
    "{\"step\":1,\"loss\":6.2,\"loss.text\":6.1,\"loss.image\":null,"
    "\"targets.text\":8,\"targets.image\":0}\n";

/// A one-rank shard set whose file's fsdp_layout is the input: the layout
/// reader must refuse every inconsistent offset, size and rank, never read
/// or allocate past what the file holds.
void fuzzShardLayout(llvm::StringRef layout) {
  std::string run = scratch + "/shards";
  llvm::sys::fs::remove_directories(run);
  llvm::sys::fs::create_directories(run);
  std::vector<float> values(8, 1.0f);
  SafetensorsWriter writer;
  for (const char *prefix : {"fsdp.", "fsdp.optim.m.", "fsdp.optim.v."})
    if (llvm::Error error = writer.add(std::string(prefix) + "u0", {8}, values))
      return ignore(std::move(error));
  writer.setMetadata("fsdp_layout", layout);
  writer.setMetadata("step", "1");
  writer.setMetadata("data_position", "8");
  writer.setChecksums();
  std::string file = shardCheckpointPath(run, 1, 0, 1);
  if (llvm::Error error = writer.write(file))
    return ignore(std::move(error));
  auto bytes = llvm::MemoryBuffer::getFile(file);
  if (!bytes)
    return;
  ShardFile record{llvm::sys::path::filename(file).str(),
                   (*bytes)->getBufferSize(),
                   llvm::xxh3_64bits((*bytes)->getBuffer())};
  if (llvm::Error error = commitShardSet(run, 1, {record}))
    return ignore(std::move(error));
  llvm::Expected<TrainingState> state = readTrainingCheckpoint(run);
  if (!state)
    return ignore(state.takeError());
}

const std::map<std::string, std::function<void(llvm::StringRef)>> kTargets = {
    {"description", fuzzDescription},
    {"safetensors", fuzzSafetensors},
    {"megatron-index", fuzzMegatronIndex},
    {"manifest", fuzzManifest},
    {"prompt", fuzzPrompt},
    {"run-metrics",
     [](llvm::StringRef bytes) { fuzzRun(bytes, kRunRecord); }},
    {"run-record", [](llvm::StringRef bytes) { fuzzRun(kMetrics, bytes); }},
    {"shard-layout", fuzzShardLayout},
};

/// Values that break size arithmetic when they land in a length field.
const uint64_t kInteresting[] = {0,          1,          0x7f,       0x80,
                                 0xff,       0x7fff,     0x8000,     0xffff,
                                 0x7fffffff, 0x80000000, 0xffffffff,
                                 0x7fffffffffffffffULL,  ~0ULL};
/// The same in text, for JSON targets.
const char *const kInterestingText[] = {
    "0",          "-1",   "1e999", "-0",  "2147483648", "9223372036854775808",
    "4294967296", "1e-9", "null",  "\"\"", "[]",        "{}", "true", "3.5"};

class Mutator {
public:
  Mutator(uint64_t seedValue, const std::vector<std::string> &seeds)
      : random(seedValue), seeds(seeds) {}

  std::string next() {
    std::string data = seeds[pick(seeds.size())];
    unsigned count = 1 + pick(8);
    for (unsigned i = 0; i < count; ++i)
      mutate(data);
    return data;
  }

private:
  size_t pick(size_t n) {
    return n ? std::uniform_int_distribution<size_t>(0, n - 1)(random) : 0;
  }

  void mutate(std::string &data) {
    size_t size = data.size();
    switch (pick(8)) {
    case 0: // flip a bit
      if (size)
        data[pick(size)] ^= char(1u << pick(8));
      break;
    case 1: // overwrite a byte
      if (size)
        data[pick(size)] = char(pick(256));
      break;
    case 2: { // an interesting little-endian integer
      uint64_t value = kInteresting[pick(std::size(kInteresting))];
      size_t width = size_t(1) << pick(4);
      if (size >= width) {
        size_t at = pick(size - width + 1);
        for (size_t b = 0; b < width; ++b)
          data[at + b] = char(value >> (8 * b));
      }
      break;
    }
    case 3: // insert random bytes
      data.insert(pick(size + 1), std::string(1 + pick(16), char(pick(256))));
      break;
    case 4: // delete a range
      if (size)
        data.erase(pick(size), 1 + pick(std::min<size_t>(size, 64)));
      break;
    case 5: { // duplicate a range
      if (!size)
        break;
      size_t at = pick(size);
      data.insert(pick(size + 1), data.substr(at, 1 + pick(64)));
      break;
    }
    case 6: { // splice with another seed
      const std::string &other = seeds[pick(seeds.size())];
      size_t cut = pick(size + 1);
      data = data.substr(0, cut) + other.substr(pick(other.size() + 1));
      break;
    }
    case 7: { // rewrite a number (or any token) in text
      if (!size)
        break;
      size_t at = pick(size);
      size_t end = at;
      while (end < size && (llvm::isDigit(data[end]) || data[end] == '.' ||
                            data[end] == '-' || data[end] == 'e'))
        ++end;
      data.replace(at, end - at,
                   kInterestingText[pick(std::size(kInterestingText))]);
      break;
    }
    }
  }

  std::mt19937_64 random;
  const std::vector<std::string> &seeds;
};

/// The input being run, for the crash handler.
const std::string *current = nullptr;

void saveCrashInput(void *) {
  if (!current)
    return;
  std::string name = "crash-" + targetName + "-" +
                     llvm::utohexstr(llvm::xxh3_64bits(*current));
  writeFile(name, *current);
  llvm::errs() << "momac-fuzz: the input that crashed " << targetName
               << " is in " << name << "\n";
}

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "momac-fuzz") << message << "\n";
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv,
                              "momac-fuzz: mutation fuzzing of momac's and "
                              "momarun's file readers\n");
  auto target = kTargets.find(targetName);
  if (target == kTargets.end())
    return fail("unknown target '" + targetName +
                "' (description, safetensors, megatron-index, manifest)");
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("momac-fuzz", dir))
    return fail("cannot create a scratch directory");
  scratch = std::string(dir);
  auto cleanup = [&] { llvm::sys::fs::remove_directories(scratch); };

  if (!reproduce.empty()) {
    auto buffer = llvm::MemoryBuffer::getFile(reproduce, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (!buffer)
      return fail(reproduce + ": cannot read");
    target->second((*buffer)->getBuffer());
    cleanup();
    llvm::outs() << "no crash\n";
    return 0;
  }

  std::vector<std::string> seeds;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(corpusDir, ec), end;
       !ec && it != end; it.increment(ec)) {
    auto buffer = llvm::MemoryBuffer::getFile(it->path(), /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (buffer)
      seeds.push_back((*buffer)->getBuffer().str());
  }
  if (seeds.empty())
    return fail("no seed inputs in --corpus '" + corpusDir + "'");
  llvm::sys::AddSignalHandler(saveCrashInput, nullptr);

  // The seeds themselves first, then mutants until the time is up.
  uint64_t runs = 0;
  for (const std::string &input : seeds) {
    current = &input;
    target->second(input);
    ++runs;
  }
  Mutator mutator(seed, seeds);
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration<double>(double(seconds));
  while (std::chrono::steady_clock::now() < deadline) {
    std::string input = mutator.next();
    current = &input;
    target->second(input);
    ++runs;
  }
  current = nullptr;
  cleanup();
  llvm::outs() << llvm::formatv("momac-fuzz {0}: {1} inputs from {2} seeds, "
                                "no crash\n",
                                targetName, runs, seeds.size());
  return 0;
}
