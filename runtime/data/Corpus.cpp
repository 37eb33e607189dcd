//===- Corpus.cpp - Writing training corpora ------------------------------===//

#include "runtime/data/Corpus.h"

#include "lib/support/Json.h"
#include "runtime/data/IndexedDataset.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <random>

using namespace momac;

namespace {

llvm::Error corpusError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

/// The n-th id owned by a modality (its ranges in order).
std::vector<int64_t> idsOf(const Modality &modality, int64_t limit) {
  std::vector<int64_t> ids;
  for (const TokenRange &range : modality.ranges)
    for (int64_t id = range.lo; id < range.hi && int64_t(ids.size()) < limit;
         ++id)
      ids.push_back(id);
  return ids;
}

const Modality *findModality(const ModelConfig &config, llvm::StringRef name) {
  for (const Modality &modality : config.modalities)
    if (modality.name == name)
      return &modality;
  return nullptr;
}

llvm::Expected<std::string> readText(std::vector<std::string> files) {
  if (files.empty()) {
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it("/usr/share/common-licenses", ec),
         end;
         it != end && !ec; it.increment(ec))
      if (llvm::sys::fs::is_regular_file(it->path()))
        files.push_back(it->path());
    std::sort(files.begin(), files.end());
  }
  std::string text;
  for (const std::string &file : files) {
    auto buffer = llvm::MemoryBuffer::getFile(file, /*IsText=*/true);
    if (!buffer)
      return corpusError(file +
                         ": cannot read: " + buffer.getError().message());
    text += (*buffer)->getBuffer().str();
  }
  if (text.size() < 4096)
    return corpusError("the text sources hold only " +
                       llvm::Twine(text.size()) +
                       " bytes; pass larger --text files");
  return text;
}

llvm::Expected<IndexedDatasetBuilder> openBuilder(const ModelConfig &config,
                                                  llvm::StringRef prefix) {
  llvm::SmallString<256> directory(prefix);
  llvm::sys::path::remove_filename(directory);
  if (!directory.empty())
    if (std::error_code ec = llvm::sys::fs::create_directories(directory))
      return corpusError(directory + ": " + ec.message());
  return IndexedDatasetBuilder::create(
      prefix, bestFittingIndexedDType(config.vocabSize));
}

} // namespace

llvm::Expected<CorpusStatistics>
momac::writeSyntheticCorpus(const ModelConfig &config, llvm::StringRef prefix,
                            const SyntheticCorpusOptions &options) {
  const Modality *text = findModality(config, "text");
  const Modality *image = findModality(config, "image");
  if (!text || !image)
    return corpusError("the synthetic corpus needs modalities named \"text\" "
                       "and \"image\"");
  std::vector<int64_t> textIds = idsOf(*text, 256);
  std::vector<int64_t> imageIds = idsOf(*image, INT64_MAX);
  if (textIds.size() < 256)
    return corpusError("the \"text\" modality owns fewer than 256 ids; byte-"
                       "level text needs 256");
  if (imageIds.size() < 2)
    return corpusError("the \"image\" modality needs at least 2 ids");
  // Bounded before anything is written: the corpus's size (4-byte ids at
  // most, 12 bytes of index a document) against the disk's free space.
  const double imageSide =
      std::max(1.0, std::floor(std::sqrt(double(options.imageTokens))));
  const double tokensPerDocument =
      0.5 * double(options.minTextBytes + options.maxTextBytes) +
      options.imageFraction * (imageSide * imageSide + 2);
  const double bytes =
      double(options.documents) * (4 * tokensPerDocument + 12);
  llvm::SmallString<256> directory(prefix);
  llvm::sys::path::remove_filename(directory);
  if (directory.empty())
    directory = ".";
  if (llvm::ErrorOr<llvm::sys::fs::space_info> space =
          llvm::sys::fs::disk_space(directory);
      space && bytes > double(space->available))
    return corpusError(llvm::formatv(
        "{0} synthetic documents take about {1:F1} GB, more than the {2:F1} "
        "GB free in {3}",
        options.documents, bytes / 1e9, double(space->available) / 1e9,
        directory));
  llvm::Expected<std::string> source = readText(options.textFiles);
  if (!source)
    return source.takeError();
  auto builder = openBuilder(config, prefix);
  if (!builder)
    return builder.takeError();

  // Begin/end-of-image sentinels are the text ids of STX and ETX.
  const int64_t beginImage = textIds[0x02], endImage = textIds[0x03];
  const int64_t side =
      std::max<int64_t>(1, int64_t(std::sqrt(double(options.imageTokens))));
  const double codes = double(imageIds.size());
  std::mt19937_64 random(options.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 1.0);

  CorpusStatistics stats;
  for (int64_t d = 0; d < options.documents; ++d) {
    std::vector<int64_t> tokens;
    // A run of text starting at a random place of the source.
    int64_t length = options.minTextBytes +
                     int64_t(uniform(random) * double(options.maxTextBytes -
                                                      options.minTextBytes));
    size_t start = size_t(uniform(random) * double(source->size() - length));
    for (int64_t i = 0; i < length; ++i)
      tokens.push_back(textIds[uint8_t((*source)[start + i])]);
    stats.textTokens += length;
    if (uniform(random) < options.imageFraction) {
      // A smooth random field: neighbours (left, above) get close codes.
      double fx = 0.2 + 0.6 * uniform(random), fy = 0.2 + 0.6 * uniform(random);
      double px = 6.28 * uniform(random), py = 6.28 * uniform(random);
      double offset = uniform(random) - 0.5;
      tokens.push_back(beginImage);
      for (int64_t y = 0; y < side; ++y)
        for (int64_t x = 0; x < side; ++x) {
          double field = 0.45 * std::sin(fx * double(x) + px) +
                         0.45 * std::cos(fy * double(y) + py) + offset +
                         0.03 * noise(random);
          double unit = std::clamp((field + 1.5) / 3.0, 0.0, 1.0);
          int64_t code =
              std::min<int64_t>(int64_t(unit * codes), int64_t(codes) - 1);
          tokens.push_back(imageIds[code]);
        }
      tokens.push_back(endImage);
      stats.imageTokens += side * side;
      stats.textTokens += 2;
    }
    if (llvm::Error error = builder->addDocument(tokens))
      return std::move(error);
    stats.documents += 1;
    stats.tokens += int64_t(tokens.size());
  }
  if (llvm::Error error = builder->finish())
    return std::move(error);
  return stats;
}

llvm::Expected<std::vector<std::vector<int64_t>>>
momac::readTokenDocuments(const ModelConfig &config, llvm::StringRef input) {
  auto buffer = llvm::MemoryBuffer::getFileOrSTDIN(input, /*IsText=*/true);
  if (!buffer)
    return corpusError(input + ": cannot read: " + buffer.getError().message());
  bool jsonl = input.ends_with(".jsonl");
  std::vector<std::vector<int64_t>> documents;
  llvm::SmallVector<llvm::StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n');
  for (size_t lineNumber = 0; lineNumber < lines.size(); ++lineNumber) {
    llvm::StringRef line = lines[lineNumber].trim();
    if (line.empty())
      continue;
    auto where = [&](const llvm::Twine &what) {
      return corpusError(input + ":" + llvm::Twine(lineNumber + 1) + ": " +
                         what);
    };
    std::vector<int64_t> tokens;
    if (jsonl) {
      llvm::Expected<llvm::json::Value> value = parseJson(line);
      if (!value)
        return where(llvm::toString(value.takeError()));
      const llvm::json::Array *list = value->getAsArray();
      if (const llvm::json::Object *object = value->getAsObject())
        list = object->getArray("tokens");
      if (!list)
        return where("expected a list of token ids or {\"tokens\": [...]}");
      for (const llvm::json::Value &id : *list) {
        std::optional<int64_t> number = id.getAsInteger();
        if (!number)
          return where("expected integer token ids");
        tokens.push_back(*number);
      }
    } else {
      llvm::SmallVector<llvm::StringRef> fields;
      line.split(fields, ' ', -1, false);
      for (llvm::StringRef field : fields) {
        int64_t id = 0;
        if (field.trim().getAsInteger(10, id))
          return where("expected token ids separated by spaces, got '" + field +
                       "'");
        tokens.push_back(id);
      }
    }
    for (int64_t id : tokens)
      if (id < 0 || id >= config.vocabSize)
        return where(llvm::formatv("token id {0} outside [0, {1})", id,
                                   config.vocabSize));
    documents.push_back(std::move(tokens));
  }
  return documents;
}

llvm::Expected<CorpusStatistics>
momac::importTokenCorpus(const ModelConfig &config, llvm::StringRef input,
                         llvm::StringRef prefix) {
  llvm::Expected<std::vector<std::vector<int64_t>>> documents =
      readTokenDocuments(config, input);
  if (!documents)
    return documents.takeError();
  auto builder = openBuilder(config, prefix);
  if (!builder)
    return builder.takeError();
  CorpusStatistics stats;
  for (const std::vector<int64_t> &tokens : *documents) {
    for (int64_t id : tokens) {
      int m = config.modalityOf(id);
      (config.modalities[m].name == "image" ? stats.imageTokens
                                            : stats.textTokens) += 1;
    }
    if (llvm::Error error = builder->addDocument(tokens))
      return std::move(error);
    stats.documents += 1;
    stats.tokens += int64_t(tokens.size());
  }
  if (stats.documents == 0)
    return corpusError(input + ": no documents");
  if (llvm::Error error = builder->finish())
    return std::move(error);
  return stats;
}
