//===- StepStatistics.cpp - What a compiled step does, counted ------------===//

#include "compiler/Analysis/StepStatistics.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

using namespace mlir;
using namespace momac;

KernelCounts &KernelCounts::operator+=(const KernelCounts &other) {
  kernels += other.kernels;
  gemms += other.gemms;
  topK += other.topK;
  copies += other.copies;
  bytes += other.bytes;
  return *this;
}

namespace {

/// The model part named by an op's location: "layers.3" for what layer 3
/// computes, "model" for the rest (MomaDialect.h, layerOfLocation).
std::string partOf(Location loc) {
  std::optional<int64_t> layer = moma::layerOfLocation(loc);
  return layer ? "layers." + std::to_string(*layer) : "model";
}

/// The bits of one element of `memref`: an index (the buffer deallocation's
/// bookkeeping of aliases) counts as 64.
double elementBits(MemRefType memref) {
  Type element = memref.getElementType();
  return element.isIntOrFloat() ? double(element.getIntOrFloatBitWidth()) : 64;
}

double estimatedBytes(Type type, int64_t tokens) {
  auto memref = dyn_cast<MemRefType>(type);
  if (!memref)
    return 0;
  double elements = 1, leading = 1;
  for (int64_t size : memref.getShape()) {
    if (ShapedType::isDynamic(size)) {
      elements *= std::max(1.0, double(tokens) / leading);
    } else {
      elements *= double(size);
      leading *= double(size);
    }
  }
  return elements * elementBits(memref) / 8;
}

/// The buffers a kernel touches: its memref operands, and for a loop the
/// memrefs defined outside it that its body uses.
double kernelBytes(Operation *op, int64_t tokens) {
  llvm::SetVector<Value> buffers;
  for (Value operand : op->getOperands())
    if (isa<MemRefType>(operand.getType()))
      buffers.insert(operand);
  op->walk([&](Operation *inner) {
    for (Value operand : inner->getOperands())
      if (isa<MemRefType>(operand.getType()) &&
          !op->isAncestor(operand.getParentRegion()->getParentOp()))
        buffers.insert(operand);
  });
  double bytes = 0;
  for (Value buffer : buffers) {
    // A view counts as the data it covers.
    bytes += estimatedBytes(buffer.getType(), tokens);
  }
  return bytes;
}

/// The size an allocation's dynamic dimension takes in a step of `tokens`
/// tokens, from the index arithmetic that computes it: constants, the
/// arithmetic of sizes (a MoD layer's ceil(capacity n), a tile's min(64,
/// ...)) and the sizes of the buffers it reads. A count that a loop computes
/// (a modality group's tokens among those the loop visits: the batch's, or
/// a MoD block's subset) is the loop's trip count split evenly over the
/// `groups` expert groups: the mix that --balance-modalities keeps, and
/// whatever the mix, the groups' counts add up to the trip count, so what
/// all groups hold at once is predicted right. What else the IR leaves open
/// (a count read from memory) is `tokens`, the bound of every token count;
/// a difference of open values is unknown, and its dimension falls back to
/// estimatedBytes' even split. The batch's row count (the entry point's
/// `batch_rows` argument) is `sequences`.
///
/// Inside a layer function (moma.layer_function), an evaluator is bound to
/// one call of it: an argument is what the caller passes, evaluated by the
/// caller's evaluator.
class SizeEvaluator {
public:
  SizeEvaluator(int64_t tokens, int64_t sequences, int64_t groups)
      : tokens(double(tokens)), sequences(double(sequences)),
        groups(double(std::max<int64_t>(1, groups))) {}
  /// For the body of `call`'s callee, as `caller` sees the call.
  SizeEvaluator(SizeEvaluator &caller, func::CallOp call, Block &callee)
      : tokens(caller.tokens), sequences(caller.sequences),
        groups(caller.groups), caller(&caller), call(call),
        calleeBody(&callee) {}
  int64_t tokenCount() const { return int64_t(tokens); }

  std::optional<double> valueOf(Value value, unsigned depth = 0) {
    if (depth > 64)
      return std::nullopt;
    if (Value passed = passedFor(value))
      return caller->valueOf(passed, depth + 1);
    if (auto it = memo.find(value); it != memo.end())
      return it->second;
    std::optional<double> result = compute(value, depth + 1);
    memo[value] = result;
    return result;
  }

  /// The bytes of `alloc` with its dynamic sizes evaluated.
  double bytesOf(memref::AllocOp alloc) {
    MemRefType type = alloc.getType();
    double elements = 1, leading = 1;
    unsigned dynamic = 0;
    for (int64_t size : type.getShape()) {
      if (!ShapedType::isDynamic(size)) {
        elements *= double(size);
        leading *= double(size);
        continue;
      }
      std::optional<double> value = valueOf(alloc.getDynamicSizes()[dynamic++]);
      elements *=
          value ? std::max(0.0, *value) : std::max(1.0, tokens / leading);
    }
    return elements * elementBits(type) / 8;
  }

private:
  double tokens, sequences, groups;
  SizeEvaluator *caller = nullptr;
  mutable func::CallOp call; // its accessors are not const
  Block *calleeBody = nullptr;
  llvm::DenseMap<Value, std::optional<double>> memo;
  llvm::DenseMap<Value, bool> openMemo;

  /// What the call passes for `value`, an argument of the callee; null
  /// otherwise.
  Value passedFor(Value value) const {
    auto argument = dyn_cast<BlockArgument>(value);
    if (!caller || !argument || argument.getOwner() != calleeBody)
      return nullptr;
    return call.getOperand(argument.getArgNumber());
  }

  std::optional<double> compute(Value value, unsigned depth) {
    Operation *def = value.getDefiningOp();
    if (!def)
      return std::nullopt; // a loop's induction variable or an argument
    if (auto load = dyn_cast<memref::LoadOp>(def))
      if (isBatchRows(load.getMemRef()))
        return sequences;
    if (auto loop = dyn_cast<scf::ForOp>(def)) {
      std::optional<double> lower = valueOf(loop.getLowerBound(), depth),
                            upper = valueOf(loop.getUpperBound(), depth),
                            step = valueOf(loop.getStep(), depth);
      double trips = lower && upper && step && *step > 0
                         ? std::max(0.0, std::ceil((*upper - *lower) / *step))
                         : tokens;
      return trips / groups;
    }
    auto operand = [&](unsigned i) {
      return valueOf(def->getOperand(i), depth);
    };
    auto both = [&](auto combine) -> std::optional<double> {
      std::optional<double> a = operand(0), b = operand(1);
      if (!a || !b)
        return std::nullopt;
      return combine(*a, *b);
    };
    if (auto constant = dyn_cast<arith::ConstantOp>(def)) {
      if (auto integer = dyn_cast<IntegerAttr>(constant.getValue()))
        return double(integer.getInt());
      if (auto real = dyn_cast<FloatAttr>(constant.getValue()))
        return real.getValueAsDouble();
      return std::nullopt;
    }
    if (isa<arith::IndexCastOp, arith::IndexCastUIOp, arith::UIToFPOp,
            arith::SIToFPOp, arith::FPToUIOp, arith::FPToSIOp, arith::ExtUIOp,
            arith::ExtSIOp, arith::TruncIOp>(def))
      return operand(0);
    if (isa<math::CeilOp>(def)) {
      std::optional<double> x = operand(0);
      return x ? std::optional<double>(std::ceil(*x)) : std::nullopt;
    }
    if (isa<arith::AddIOp, arith::AddFOp>(def))
      return both([](double a, double b) { return a + b; });
    if (isa<arith::MulIOp, arith::MulFOp>(def))
      return both([](double a, double b) { return a * b; });
    if (isa<arith::DivFOp>(def))
      return both([](double a, double b) { return b ? a / b : a; });
    if (isa<arith::DivUIOp, arith::DivSIOp, arith::FloorDivSIOp>(def))
      return both([](double a, double b) { return b ? std::floor(a / b) : a; });
    if (isa<arith::CeilDivUIOp, arith::CeilDivSIOp>(def))
      return both([](double a, double b) { return b ? std::ceil(a / b) : a; });
    if (isa<arith::MinUIOp, arith::MinSIOp>(def))
      return both([](double a, double b) { return std::min(a, b); });
    if (isa<arith::MaxUIOp, arith::MaxSIOp>(def))
      return both([](double a, double b) { return std::max(a, b); });
    if (isa<arith::SubIOp, arith::SubFOp>(def)) {
      // Only a difference of known values: an open count minus another is
      // not bounded by either.
      if (isOpen(def->getOperand(0), depth) ||
          isOpen(def->getOperand(1), depth))
        return std::nullopt;
      return both([](double a, double b) { return a - b; });
    }
    if (auto select = dyn_cast<arith::SelectOp>(def)) {
      std::optional<double> a = valueOf(select.getTrueValue(), depth),
                            b = valueOf(select.getFalseValue(), depth);
      if (!a || !b)
        return std::nullopt;
      return std::max(*a, *b);
    }
    if (auto apply = dyn_cast<affine::AffineApplyOp>(def))
      return evaluateMap(apply.getAffineMap(), apply.getMapOperands(), depth,
                         /*takeMin=*/true);
    if (auto min = dyn_cast<affine::AffineMinOp>(def))
      return evaluateMap(min.getAffineMap(), min.getMapOperands(), depth,
                         /*takeMin=*/true);
    if (auto max = dyn_cast<affine::AffineMaxOp>(def))
      return evaluateMap(max.getAffineMap(), max.getMapOperands(), depth,
                         /*takeMin=*/false);
    if (auto dim = dyn_cast<memref::DimOp>(def)) {
      std::optional<int64_t> index = dim.getConstantIndex();
      if (!index)
        return std::nullopt;
      return dimOf(dim.getSource(), *index, depth);
    }
    return tokens;
  }

  /// The size of dimension `index` of the buffer `source`.
  std::optional<double> dimOf(Value source, int64_t index, unsigned depth) {
    if (Value passed = passedFor(source))
      return caller->dimOf(passed, index, depth + 1);
    auto type = cast<MemRefType>(source.getType());
    if (!type.isDynamicDim(index))
      return double(type.getDimSize(index));
    if (auto alloc = source.getDefiningOp<memref::AllocOp>())
      return valueOf(alloc.getDynamicSizes()[type.getDynamicDimIndex(index)],
                     depth);
    if (auto subview = source.getDefiningOp<memref::SubViewOp>()) {
      OpFoldResult size = subview.getMixedSizes()[index];
      if (auto attr = dyn_cast<Attribute>(size))
        return double(cast<IntegerAttr>(attr).getInt());
      return valueOf(cast<Value>(size), depth);
    }
    return tokens;
  }

  bool isBatchRows(Value buffer) const {
    if (Value passed = passedFor(buffer))
      return caller->isBatchRows(passed);
    auto argument = dyn_cast<BlockArgument>(buffer);
    if (!argument)
      return false;
    auto func = dyn_cast<func::FuncOp>(argument.getOwner()->getParentOp());
    if (!func)
      return false;
    auto name = func.getArgAttrOfType<StringAttr>(argument.getArgNumber(),
                                                  mlir::moma::kParamAttrName);
    return name && name.getValue() == "batch_rows";
  }

  /// True when `value` comes from a count the IR leaves open. Memoized like
  /// valueOf: index arithmetic shares its operands, and a walk without
  /// memory would revisit them once per path.
  bool isOpen(Value value, unsigned depth) {
    if (Value passed = passedFor(value))
      return caller->isOpen(passed, depth + 1);
    if (auto it = openMemo.find(value); it != openMemo.end())
      return it->second;
    bool open = computeIsOpen(value, depth);
    openMemo[value] = open;
    return open;
  }
  bool computeIsOpen(Value value, unsigned depth) {
    Operation *def = value.getDefiningOp();
    if (!def || depth > 64)
      return true;
    if (isa<arith::ConstantOp>(def))
      return false;
    if (auto load = dyn_cast<memref::LoadOp>(def))
      return !isBatchRows(load.getMemRef());
    if (def->getNumRegions() > 0)
      return true;
    return llvm::any_of(def->getOperands(),
                        [&](Value v) { return isOpen(v, depth + 1); });
  }

  std::optional<double> evaluateMap(AffineMap map, ValueRange operands,
                                    unsigned depth, bool takeMin) {
    SmallVector<std::optional<double>> values;
    bool anyOpen = false;
    for (Value operand : operands) {
      values.push_back(valueOf(operand, depth));
      anyOpen |= isOpen(operand, depth);
    }
    // A minimum is bounded by any result that can be evaluated (a tile's
    // min(64, rows - 64 i) by 64); a maximum or a plain value needs them all.
    std::optional<double> result;
    for (AffineExpr expr : map.getResults()) {
      // A difference (a - b) of open counts is not bounded by either.
      bool subtracts = false;
      expr.walk([&](AffineExpr inner) {
        if (auto constant = dyn_cast<AffineConstantExpr>(inner))
          subtracts |= constant.getValue() < 0;
      });
      std::optional<double> v =
          anyOpen && subtracts ? std::nullopt
                               : evaluateExpr(expr, values, map.getNumDims());
      if (!v) {
        if (takeMin)
          continue;
        return std::nullopt;
      }
      result = !result   ? *v
               : takeMin ? std::min(*result, *v)
                         : std::max(*result, *v);
    }
    return result;
  }

  static std::optional<double>
  evaluateExpr(AffineExpr expr, ArrayRef<std::optional<double>> values,
               unsigned numDims) {
    if (auto constant = dyn_cast<AffineConstantExpr>(expr))
      return double(constant.getValue());
    if (auto dim = dyn_cast<AffineDimExpr>(expr))
      return values[dim.getPosition()];
    if (auto symbol = dyn_cast<AffineSymbolExpr>(expr))
      return values[numDims + symbol.getPosition()];
    auto binary = cast<AffineBinaryOpExpr>(expr);
    std::optional<double> a = evaluateExpr(binary.getLHS(), values, numDims),
                          b = evaluateExpr(binary.getRHS(), values, numDims);
    if (!a || !b)
      return std::nullopt;
    switch (expr.getKind()) {
    case AffineExprKind::Add:
      return *a + *b;
    case AffineExprKind::Mul:
      return *a * *b;
    case AffineExprKind::FloorDiv:
      return *b ? std::floor(*a / *b) : *a;
    case AffineExprKind::CeilDiv:
      return *b ? std::ceil(*a / *b) : *a;
    case AffineExprKind::Mod:
      return *b ? std::fmod(*a, *b) : *a;
    default:
      return std::nullopt;
    }
  }
};

bool isTopKCall(Operation *op) {
  auto call = dyn_cast<func::CallOp>(op);
  return call && call.getCallee() == "momart_select_smallest_i64";
}

/// The layer function (-moma-outline-layers) that `op` calls, if any.
func::FuncOp calledLayerFunction(Operation *op, const SymbolTable &symbols) {
  auto call = dyn_cast<func::CallOp>(op);
  auto callee =
      call ? symbols.lookup<func::FuncOp>(call.getCallee()) : func::FuncOp();
  if (!callee || callee.isExternal() ||
      !callee->hasAttr(mlir::moma::kLayerFunctionAttrName))
    return nullptr;
  return callee;
}

/// What the kernels of the functions a step calls count, each counted once.
struct CalleeCounts {
  const SymbolTable &symbols;
  llvm::DenseMap<Operation *, KernelCounts> known;
};

void countOp(Operation *op, int64_t tokens, KernelCounts &counts,
             CalleeCounts &callees);

/// A call of a layer function counts what the function runs.
KernelCounts countCallee(func::FuncOp callee, int64_t tokens,
                         CalleeCounts &callees) {
  if (auto it = callees.known.find(callee); it != callees.known.end())
    return it->second;
  KernelCounts counts;
  for (Operation &op : callee.getBody().getOps())
    countOp(&op, tokens, counts, callees);
  callees.known[callee] = counts;
  return counts;
}

/// Counts `op` and what it contains into `counts`.
void countOp(Operation *op, int64_t tokens, KernelCounts &counts,
             CalleeCounts &callees) {
  if (func::FuncOp callee = calledLayerFunction(op, callees.symbols)) {
    counts += countCallee(callee, tokens, callees);
    return;
  }
  if (isa<scf::ForallOp, scf::ParallelOp>(op)) {
    counts.kernels += 1;
    counts.bytes += kernelBytes(op, tokens);
    // GEMMs and selections inside a loop (per sequence, per expert) are
    // library calls of their own.
    op->walk([&](Operation *inner) {
      if (auto linalgOp = dyn_cast<linalg::LinalgOp>(inner))
        counts.gemms += linalg::isaContractionOpInterface(linalgOp);
      counts.topK += isTopKCall(inner);
    });
    return;
  }
  if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
    if (linalg::isaContractionOpInterface(linalgOp))
      counts.gemms += 1;
    else
      counts.kernels += 1;
    counts.bytes += kernelBytes(op, tokens);
    return;
  }
  if (isa<memref::CopyOp>(op)) {
    counts.copies += 1;
    counts.bytes += 2 * estimatedBytes(op->getOperand(0).getType(), tokens);
    return;
  }
  if (isTopKCall(op)) {
    counts.topK += 1;
    return;
  }
  // Sequential control flow (routing loops, conditionals): what it holds.
  for (Region &region : op->getRegions())
    for (Operation &inner : region.getOps())
      countOp(&inner, tokens, counts, callees);
}

/// The allocation a buffer is a view of (or the buffer), as `live` knows it.
Value baseBuffer(Value buffer, const llvm::DenseMap<Value, double> &live) {
  while (Operation *def = buffer.getDefiningOp()) {
    if (live.count(buffer) || !isa<ViewLikeOpInterface>(def))
      break;
    buffer = cast<ViewLikeOpInterface>(def).getViewSource();
  }
  return buffer;
}

void replayCall(func::CallOp call, func::FuncOp callee, SizeEvaluator &sizes,
                const SymbolTable &symbols,
                llvm::DenseMap<Value, double> &live, double &current,
                double &peak);

/// Replays the allocations and deallocations of `ops` in program order
/// (into sequential control flow and the layer functions called, not into
/// kernels, whose per-iteration scratch is small), tracking the live bytes
/// and their peak.
void replayAllocations(Block &ops, SizeEvaluator &sizes,
                       const SymbolTable &symbols,
                       llvm::DenseMap<Value, double> &live, double &current,
                       double &peak) {
  for (Operation &op : ops) {
    if (func::FuncOp callee = calledLayerFunction(&op, symbols)) {
      replayCall(cast<func::CallOp>(op), callee, sizes, symbols, live,
                 current, peak);
      continue;
    }
    if (isa<memref::AllocOp, memref::AllocaOp>(op)) {
      auto alloc = dyn_cast<memref::AllocOp>(op);
      double bytes =
          alloc ? sizes.bytesOf(alloc)
                : estimatedBytes(op.getResult(0).getType(), sizes.tokenCount());
      live[op.getResult(0)] = bytes;
      current += bytes;
      peak = std::max(peak, current);
      continue;
    }
    if (auto dealloc = dyn_cast<memref::DeallocOp>(op)) {
      // Deallocation may free a view of the allocation, by its base.
      Value buffer = baseBuffer(dealloc.getMemref(), live);
      if (auto it = live.find(buffer); it != live.end()) {
        current -= it->second;
        live.erase(it);
      }
      continue;
    }
    if (isa<scf::ForallOp, scf::ParallelOp>(op))
      continue;
    for (Region &region : op.getRegions())
      for (Block &block : region)
        replayAllocations(block, sizes, symbols, live, current, peak);
  }
}

/// The callee's allocations, sized as this call sizes them; the buffers it
/// returns stay live as the call's results.
void replayCall(func::CallOp call, func::FuncOp callee, SizeEvaluator &sizes,
                const SymbolTable &symbols,
                llvm::DenseMap<Value, double> &live, double &current,
                double &peak) {
  Block &body = callee.getBody().front();
  SizeEvaluator calleeSizes(sizes, call, body);
  llvm::DenseMap<Value, double> calleeLive;
  replayAllocations(body, calleeSizes, symbols, calleeLive, current, peak);
  Operation *ret = body.getTerminator();
  for (auto [returned, result] :
       llvm::zip(ret->getOperands(), call.getResults())) {
    auto it = calleeLive.find(baseBuffer(returned, calleeLive));
    if (it == calleeLive.end())
      continue;
    live[result] = it->second;
    calleeLive.erase(it);
  }
}

} // namespace

std::map<std::string, FunctionStatistics>
momac::collectStepStatistics(ModuleOp module, int64_t tokens,
                             int64_t sequences, int64_t groups) {
  std::map<std::string, FunctionStatistics> result;
  SymbolTable symbols(module);
  CalleeCounts callees{symbols, {}};
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isPrivate() || func.isExternal())
      continue;
    FunctionStatistics &stats = result[func.getName().str()];
    for (Operation &op : func.getBody().getOps()) {
      KernelCounts counts;
      countOp(&op, tokens, counts, callees);
      stats.total += counts;
      stats.byPart[partOf(op.getLoc())] += counts;
    }
    llvm::DenseMap<Value, double> live;
    double current = 0;
    SizeEvaluator sizes(tokens, sequences, groups);
    replayAllocations(func.getBody().front(), sizes, symbols, live, current,
                      stats.peakTemporaryBytes);
  }
  return result;
}
