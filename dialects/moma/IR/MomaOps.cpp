//===- MomaOps.cpp - moma dialect operations ------------------------------===//
//
// Verifiers check every shape relation stated in the op descriptions. A
// dynamic dimension is compatible with anything; static ones must agree.
//
//===----------------------------------------------------------------------===//

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/IR/TypeUtilities.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moma;

#include "dialects/moma/IR/MomaDialect.cpp.inc"
#include "dialects/moma/IR/MomaInterfaces.cpp.inc"

std::optional<int64_t> mlir::moma::layerOfLocation(Location loc) {
  std::optional<int64_t> layer;
  loc->walk([&](Location inner) {
    auto named = dyn_cast<NameLoc>(inner);
    if (!named)
      return WalkResult::advance();
    StringRef name = named.getName().getValue();
    int64_t index;
    if (!name.consume_front("layers.") || name.consumeInteger(10, index) ||
        !(name.empty() || name.starts_with(".")))
      return WalkResult::advance();
    layer = index;
    return WalkResult::interrupt();
  });
  return layer;
}

void MomaDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/moma/IR/MomaOps.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "dialects/moma/IR/MomaOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

namespace {

bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

std::string dimToString(int64_t dim) {
  return ShapedType::isDynamic(dim) ? "?" : std::to_string(dim);
}

int64_t dim(Value value, unsigned index) {
  return cast<RankedTensorType>(value.getType()).getDimSize(index);
}

int64_t rank(Value value) {
  return cast<RankedTensorType>(value.getType()).getRank();
}

/// "<aName> (A) does not match <bName> (B)" unless A and B are compatible.
LogicalResult expectSameDim(Operation *op, int64_t a, const Twine &aName,
                            int64_t b, const Twine &bName) {
  if (compatible(a, b))
    return success();
  return op->emitOpError() << aName << " (" << dimToString(a)
                           << ") does not match " << bName << " ("
                           << dimToString(b) << ")";
}

LogicalResult expectRank(Operation *op, Value value, int64_t expected,
                         const Twine &name) {
  if (rank(value) == expected)
    return success();
  return op->emitOpError() << "expects " << name << " of rank " << expected
                           << ", got rank " << rank(value);
}

/// Checks named lists of half-open token ranges ("lo0, hi0, lo1, hi1, ...")
/// shared by modality_partition and cross_entropy: as many lists as names,
/// unique names, well-formed and pairwise disjoint ranges.
LogicalResult verifyRangeLists(Operation *op, ArrayAttr names,
                               ArrayAttr rangeLists) {
  if (names.size() != rangeLists.size())
    return op->emitOpError() << "has " << names.size() << " names but "
                             << rangeLists.size() << " range lists";
  llvm::StringSet<> seen;
  std::vector<std::pair<int64_t, int64_t>> all;
  for (auto [name, list] : llvm::zip(names, rangeLists)) {
    StringRef text = cast<StringAttr>(name).getValue();
    if (text.empty())
      return op->emitOpError() << "has an empty name";
    if (!seen.insert(text).second)
      return op->emitOpError() << "has the name \"" << text << "\" twice";
    ArrayRef<int64_t> bounds = cast<DenseI64ArrayAttr>(list).asArrayRef();
    if (bounds.empty() || bounds.size() % 2 != 0)
      return op->emitOpError() << "expects the ranges of \"" << text
                               << "\" as a non-empty list of lo, hi pairs, got "
                               << bounds.size() << " values";
    for (size_t i = 0; i < bounds.size(); i += 2) {
      if (bounds[i] < 0 || bounds[i] >= bounds[i + 1])
        return op->emitOpError()
               << "has the empty or negative range [" << bounds[i] << ", "
               << bounds[i + 1] << ") in \"" << text << "\"";
      all.emplace_back(bounds[i], bounds[i + 1]);
    }
  }
  llvm::sort(all);
  for (size_t i = 1; i < all.size(); ++i)
    if (all[i].first < all[i - 1].second)
      return op->emitOpError() << "has overlapping ranges [" << all[i - 1].first
                               << ", " << all[i - 1].second << ") and ["
                               << all[i].first << ", " << all[i].second << ")";
  return success();
}

/// For the stacked (rank 3) form of linear and swiglu: the expert counts of
/// the operands agree.
LogicalResult expectSameExperts(Operation *op, ValueRange values) {
  for (Value value : values.drop_front())
    if (failed(expectSameDim(op, dim(value, 0), "expert count of an operand",
                             dim(values.front(), 0), "the input's")))
      return failure();
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Token layout
//===----------------------------------------------------------------------===//

LogicalResult ShiftTokensOp::verify() {
  int64_t batch = dim(getTokens(), 0), width = dim(getTokens(), 1);
  if (!ShapedType::isDynamic(width) && width < 2)
    return emitOpError() << "expects at least 2 tokens per row (S + 1), got "
                         << width;
  int64_t flat = dim(getInputs(), 0);
  if (ShapedType::isDynamic(batch) || ShapedType::isDynamic(width))
    return success();
  return expectSameDim(*this, flat, "flat token count", batch * (width - 1),
                       "B * S");
}

LogicalResult TokenPositionsOp::verify() {
  int64_t n = dim(getPositions(), 0);
  if (!ShapedType::isDynamic(n) && n % getSeqLen() != 0)
    return emitOpError() << "expects a token count divisible by seq_len "
                         << getSeqLen() << ", got " << n;
  return success();
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

LogicalResult ModalityPartitionOp::verify() {
  if (getIndices().size() != getGroupNames().size())
    return emitOpError() << "has " << getGroupNames().size() << " groups but "
                         << getIndices().size() << " results";
  if (getGroupNames().empty())
    return emitOpError() << "expects at least one group";
  return verifyRangeLists(*this, getGroupNames(), getGroupRanges());
}

LogicalResult PaddedModalityPartitionOp::verify() {
  if (getIndices().size() != getGroupNames().size())
    return emitOpError() << "has " << getGroupNames().size()
                         << " groups but " << getIndices().size() << " lists";
  if (getGroupNames().empty())
    return emitOpError() << "expects at least one group";
  int64_t tokens = dim(getTokenIds(), 0);
  for (auto [g, list] : llvm::enumerate(getIndices()))
    if (failed(expectSameDim(*this, dim(list, 0),
                             "the length of list " + Twine(g), tokens,
                             "the token count (lists are padded to it)")))
      return failure();
  if (failed(expectSameDim(*this, dim(getCounts(), 0), "the count vector size",
                           int64_t(getGroupNames().size()),
                           "the number of groups")))
    return failure();
  return verifyRangeLists(*this, getGroupNames(), getGroupRanges());
}

/// A `valid` operand: how many leading rows are tokens, in one element.
static LogicalResult verifyValidCount(Operation *op, Value valid) {
  if (!valid || dim(valid, 0) == 1)
    return success();
  return op->emitOpError() << "expects a one-element valid count, got "
                           << valid.getType();
}

LogicalResult RouterOp::verify() {
  if (failed(expectSameDim(*this, dim(getInput(), 1), "input feature size",
                           dim(getWeight(), 1), "the weight's")) ||
      failed(expectSameDim(*this, dim(getScores(), 0), "score rows",
                           dim(getInput(), 0), "input rows")) ||
      failed(expectSameDim(*this, dim(getScores(), 1), "score columns",
                           dim(getWeight(), 0), "router outputs")))
    return failure();
  if (Value noise = getNoise())
    if (failed(expectSameDim(*this, dim(noise, 0), "noise rows",
                             dim(getScores(), 0), "score rows")) ||
        failed(expectSameDim(*this, dim(noise, 1), "noise columns",
                             dim(getScores(), 1), "score columns")))
      return failure();
  return success();
}

LogicalResult ExpertChoiceOp::verify() {
  int64_t experts = dim(getScores(), 1);
  if (ShapedType::isDynamic(experts))
    return emitOpError() << "expects a static number of experts";
  if (failed(verifyValidCount(*this, getValid())) ||
      failed(expectSameDim(*this, dim(getIndices(), 0), "index rows", experts,
                           "the number of experts")) ||
      failed(expectSameDim(*this, dim(getGates(), 0), "gate rows", experts,
                           "the number of experts")) ||
      failed(expectSameDim(*this, dim(getGates(), 1), "gates per expert",
                           dim(getIndices(), 1), "indices per expert")))
    return failure();
  int64_t tokens = dim(getScores(), 0), chosen = dim(getIndices(), 1);
  if (!ShapedType::isDynamic(tokens) && !ShapedType::isDynamic(chosen)) {
    // k = min(n, ceil(c * n / E)) in IEEE double, as MODEL_SPEC section 4.
    double c = getCapacityFactor().convertToDouble();
    int64_t k = std::min<int64_t>(
        tokens, int64_t(std::ceil((c * double(tokens)) / double(experts))));
    if (k != chosen)
      return emitOpError() << "expects " << k
                           << " tokens per expert (min(n, ceil(c * n / E)) "
                              "with n = "
                           << tokens << "), got " << chosen;
  }
  return success();
}

LogicalResult ModSelectOp::verify() {
  if (dim(getScores(), 1) != 1)
    return emitOpError() << "expects one score per token ([N, 1]), got "
                         << dimToString(dim(getScores(), 1)) << " columns";
  if (failed(expectSameDim(*this, dim(getGates(), 0), "gate count",
                           dim(getIndices(), 0), "index count")))
    return failure();
  int64_t tokens = dim(getScores(), 0), chosen = dim(getIndices(), 0);
  if (!ShapedType::isDynamic(tokens) && !ShapedType::isDynamic(chosen)) {
    int64_t k =
        int64_t(std::ceil(getCapacity().convertToDouble() * double(tokens)));
    if (k != chosen)
      return emitOpError() << "expects " << k
                           << " selected tokens (ceil(capacity * N) with N = "
                           << tokens << "), got " << chosen;
  }
  return success();
}

LogicalResult ModMergeOp::verify() {
  if (failed(expectSameDim(*this, dim(getBlock(), 1), "block feature size",
                           dim(getInput(), 1), "the input's")) ||
      failed(expectSameDim(*this, dim(getIndices(), 0), "index count",
                           dim(getBlock(), 0), "block rows")) ||
      failed(expectSameDim(*this, dim(getGates(), 0), "gate count",
                           dim(getBlock(), 0), "block rows")))
    return failure();
  return success();
}

LogicalResult AuxRouterOp::verify() {
  if (failed(expectSameDim(*this, dim(getW1(), 1), "w1 input size",
                           dim(getInput(), 1), "the input's feature size")) ||
      failed(expectSameDim(*this, dim(getW2(), 1), "w2 input size",
                           dim(getW1(), 0), "w1's output size")) ||
      failed(expectSameDim(*this, dim(getScores(), 0), "score rows",
                           dim(getInput(), 0), "input rows")) ||
      failed(expectSameDim(*this, dim(getScores(), 1), "score columns",
                           dim(getW2(), 0), "w2's output size")))
    return failure();
  return success();
}

/// An auxiliary router's predictions [n, E] against the batch choice:
/// indices [E, k], or [k] for a single-output (MoD) router.
static LogicalResult verifyRouterChoice(Operation *op, Value predictions,
                                        Value indices) {
  int64_t outputs = dim(predictions, 1);
  if (rank(indices) == 2)
    return expectSameDim(op, dim(indices, 0), "index rows", outputs,
                         "prediction columns");
  if (rank(indices) == 1)
    return expectSameDim(op, outputs, "prediction columns", 1,
                         "the single output a rank-1 index list implies");
  return op->emitOpError() << "expects indices of rank 1 or 2, got rank "
                           << rank(indices);
}

LogicalResult AuxRouterLossOp::verify() {
  if (failed(verifyValidCount(*this, getValid())))
    return failure();
  return verifyRouterChoice(*this, getPredictions(), getIndices());
}

LogicalResult CausalRouteOp::verify() {
  auto scores = cast<RankedTensorType>(getScores().getType());
  auto predictions = cast<RankedTensorType>(getPredictions().getType());
  if (failed(verifyCompatibleShape(scores.getShape(), predictions.getShape())))
    return emitOpError() << "expects scores and predictions of one shape, got "
                         << scores << " and " << predictions;
  int64_t outputs = dim(getScores(), 1);
  if (failed(expectSameDim(*this, dim(getIndices(), 0), "index rows", outputs,
                           "score columns")) ||
      failed(expectSameDim(*this, dim(getGates(), 0), "gate rows", outputs,
                           "score columns")) ||
      failed(expectSameDim(*this, dim(getGates(), 1), "gate columns",
                           dim(getIndices(), 1), "index columns")))
    return failure();
  return success();
}

LogicalResult AuxRouterConfusionOp::verify() {
  auto counts = cast<RankedTensorType>(getCounts().getType());
  if (counts.getRank() != 1 || counts.getDimSize(0) != 4)
    return emitOpError() << "expects counts of type tensor<4xf32>, got "
                         << counts;
  if (failed(verifyValidCount(*this, getValid())))
    return failure();
  return verifyRouterChoice(*this, getPredictions(), getIndices());
}

LogicalResult RoutingDisagreementOp::verify() {
  return verifyRouterChoice(*this, getPredictions(), getIndices());
}

//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

LogicalResult GatherTokensOp::verify() {
  auto source = cast<RankedTensorType>(getSource().getType());
  auto indices = cast<RankedTensorType>(getIndices().getType());
  auto result = cast<RankedTensorType>(getResult().getType());
  if (source.getRank() < 1)
    return emitOpError() << "expects a source of rank >= 1";
  if (source.getElementType() != result.getElementType())
    return emitOpError() << "expects the result element type "
                         << source.getElementType() << ", got "
                         << result.getElementType();
  SmallVector<int64_t> expected(indices.getShape());
  llvm::append_range(expected, source.getShape().drop_front());
  if (result.getRank() != int64_t(expected.size()))
    return emitOpError() << "expects a result of rank " << expected.size()
                         << " (indices' shape, then the source's trailing "
                            "dimensions), got rank "
                         << result.getRank();
  for (auto [i, pair] : llvm::enumerate(llvm::zip(result.getShape(), expected)))
    if (failed(expectSameDim(*this, std::get<0>(pair),
                             "result dimension " + Twine(i), std::get<1>(pair),
                             "the expected size")))
      return failure();
  return success();
}

LogicalResult ScatterAddTokensOp::verify() {
  auto source = cast<RankedTensorType>(getSource().getType());
  auto indices = cast<RankedTensorType>(getIndices().getType());
  if (source.getRank() != indices.getRank() + 1)
    return emitOpError() << "expects a source of rank " << indices.getRank() + 1
                         << " (indices' rank + 1), got rank "
                         << source.getRank();
  for (int64_t i = 0; i < indices.getRank(); ++i)
    if (failed(expectSameDim(*this, source.getDimSize(i),
                             "source dimension " + Twine(i),
                             indices.getDimSize(i), "the indices'")))
      return failure();
  if (failed(expectSameDim(*this, source.getShape().back(),
                           "source feature size", dim(getDest(), 1),
                           "the destination's")))
    return failure();
  if (Value weights = getWeights()) {
    auto weightType = cast<RankedTensorType>(weights.getType());
    if (weightType.getRank() != indices.getRank())
      return emitOpError() << "expects weights of the indices' rank "
                           << indices.getRank() << ", got rank "
                           << weightType.getRank();
    for (int64_t i = 0; i < indices.getRank(); ++i)
      if (failed(expectSameDim(*this, weightType.getDimSize(i),
                               "weight dimension " + Twine(i),
                               indices.getDimSize(i), "the indices'")))
        return failure();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Transformer compute
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::verify() {
  if (failed(expectSameDim(*this, dim(getResult(), 0), "result rows",
                           dim(getTokenIds(), 0), "the token count")) ||
      failed(expectSameDim(*this, dim(getResult(), 1), "result feature size",
                           dim(getTable(), 1), "the table's")))
    return failure();
  return success();
}

LogicalResult LinearOp::verify() {
  int64_t r = rank(getInput());
  if (r != 2 && r != 3)
    return emitOpError() << "expects rank 2 (plain) or 3 (stacked experts) "
                            "operands, got rank "
                         << r;
  if (rank(getWeight()) != r || rank(getResult()) != r)
    return emitOpError() << "expects input, weight and result of the same "
                            "rank";
  if (r == 3 &&
      failed(expectSameExperts(*this, {getInput(), getWeight(), getResult()})))
    return failure();
  if (failed(expectSameDim(*this, dim(getInput(), r - 1), "input feature size",
                           dim(getWeight(), r - 1),
                           "the weight's input size")) ||
      failed(expectSameDim(*this, dim(getResult(), r - 2), "result rows",
                           dim(getInput(), r - 2), "input rows")) ||
      failed(expectSameDim(*this, dim(getResult(), r - 1),
                           "result feature size", dim(getWeight(), r - 2),
                           "the weight's output size")))
    return failure();
  return success();
}

LogicalResult RMSNormOp::verify() {
  return expectSameDim(*this, dim(getWeight(), 0), "weight size",
                       dim(getInput(), 1), "the input's feature size");
}

LogicalResult HeadLayerNormOp::verify() {
  int64_t heads = dim(getWeight(), 0), headDim = dim(getWeight(), 1);
  int64_t features = dim(getInput(), 1);
  if (ShapedType::isDynamic(heads) || ShapedType::isDynamic(headDim))
    return emitOpError() << "expects a static [heads, head_dim] weight";
  return expectSameDim(*this, features, "input feature size", heads * headDim,
                       "heads * head_dim");
}

/// Heads split the features evenly; RoPE also needs an even head size.
static LogicalResult verifyHeads(Operation *op, Value input, int64_t heads,
                                 bool needEvenHeadDim) {
  int64_t features = dim(input, 1);
  if (ShapedType::isDynamic(features))
    return op->emitOpError() << "expects a static feature size";
  if (features % heads != 0)
    return op->emitOpError() << "expects the feature size " << features
                             << " to be divisible by " << heads << " heads";
  if (needEvenHeadDim && (features / heads) % 2 != 0)
    return op->emitOpError()
           << "expects an even head size, got " << features / heads;
  return success();
}

LogicalResult RopeOp::verify() {
  if (failed(verifyHeads(*this, getInput(), getNumHeads(), true)))
    return failure();
  return expectSameDim(*this, dim(getPositions(), 0), "position count",
                       dim(getInput(), 0), "input rows");
}

LogicalResult AttentionOp::verify() {
  if (failed(verifyHeads(*this, getQuery(), getNumHeads(), false)))
    return failure();
  return expectSameDim(*this, dim(getPositions(), 0), "position count",
                       dim(getQuery(), 0), "query rows");
}

LogicalResult SwiGLUOp::verify() {
  int64_t r = rank(getInput());
  if (r != 2 && r != 3)
    return emitOpError() << "expects rank 2 (dense) or 3 (stacked experts) "
                            "operands, got rank "
                         << r;
  for (Value weight : {getW1(), getW2()})
    if (rank(weight) != r)
      return emitOpError() << "expects weights of the input's rank " << r;
  if (r == 3 &&
      failed(expectSameExperts(*this, {getInput(), getW1(), getW2()})))
    return failure();
  int64_t hidden = dim(getW1(), r - 2), features = dim(getW1(), r - 1);
  if (failed(expectSameDim(*this, dim(getInput(), r - 1), "input feature size",
                           features, "w1's input size")) ||
      failed(expectSameDim(*this, dim(getW2(), r - 2), "w2 output size",
                           features, "w1's input size")) ||
      failed(expectSameDim(*this, dim(getW2(), r - 1), "w2 input size", hidden,
                           "w1's hidden size")))
    return failure();
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  if (failed(expectSameDim(*this, dim(getTargets(), 0), "target count",
                           dim(getLogits(), 0), "logit rows")))
    return failure();
  if (getModalityLosses().size() != getModalityNames().size())
    return emitOpError() << "has " << getModalityNames().size()
                         << " modalities but " << getModalityLosses().size()
                         << " per-modality losses";
  if (failed(verifyRangeLists(*this, getModalityNames(), getModalityRanges())))
    return failure();
  int64_t vocab = dim(getLogits(), 1);
  if (ShapedType::isDynamic(vocab))
    return success();
  for (Attribute list : getModalityRanges())
    for (int64_t bound : cast<DenseI64ArrayAttr>(list).asArrayRef())
      if (bound > vocab)
        return emitOpError() << "has a token range beyond the vocabulary ("
                             << bound << " > " << vocab << ")";
  return success();
}

LogicalResult MatmulOp::verify() {
  int64_t r = rank(getLhs());
  if ((r != 2 && r != 3) || rank(getRhs()) != r || rank(getResult()) != r)
    return emitOpError() << "expects operands and result of rank 2, or 3 "
                            "(stacked experts)";
  if (r == 3 && failed(expectSameExperts(
                    *this, {getLhs(), getRhs(), getResult()})))
    return failure();
  int64_t rows = dim(getLhs(), getTransposeLhs() ? r - 1 : r - 2);
  int64_t inner = dim(getLhs(), getTransposeLhs() ? r - 2 : r - 1);
  int64_t rhsInner = dim(getRhs(), getTransposeRhs() ? r - 1 : r - 2);
  int64_t cols = dim(getRhs(), getTransposeRhs() ? r - 2 : r - 1);
  if (failed(expectSameDim(*this, rhsInner, "the right operand's inner size",
                           inner, "the left operand's")) ||
      failed(expectSameDim(*this, dim(getResult(), r - 2), "result rows",
                           rows, "the left operand's rows")) ||
      failed(expectSameDim(*this, dim(getResult(), r - 1), "result columns",
                           cols, "the right operand's columns")))
    return failure();
  return success();
}
