//===- LinalgToBlas.cpp - Buffer contractions to BLAS-style GEMM calls ----===//
//
// See Passes.td. The GEMMs of a MoMa step (projections, stacked experts,
// attention per head, and their gradients) are all `C += A B` contractions
// on buffers whose layouts are known at compile time, so the choice of
// transposes and leading dimensions is made here, once.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace momac {
#define GEN_PASS_DEF_CONVERTLINALGTOBLAS
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

// CBLAS enumerations.
constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

/// `v` without an `arith.extf` in front (a bf16 operand widened to f32).
Value skipExtension(Value v) {
  if (auto ext = v.getDefiningOp<arith::ExtFOp>())
    return ext.getIn();
  return v;
}

/// True when the body is `yield(c + a * b)` (either operand order), where a
/// and b may be widened from a narrower type by `arith.extf`.
bool isMultiplyAccumulate(linalg::GenericOp op) {
  Block &body = op.getRegion().front();
  auto yield = dyn_cast<linalg::YieldOp>(body.getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return false;
  auto add = yield.getValues()[0].getDefiningOp<arith::AddFOp>();
  if (!add)
    return false;
  Value a = body.getArgument(0), b = body.getArgument(1),
        c = body.getArgument(2);
  Value product = add.getLhs() == c ? add.getRhs() : add.getLhs();
  if ((add.getLhs() == c) == (add.getRhs() == c))
    return false;
  auto mul = product.getDefiningOp<arith::MulFOp>();
  if (!mul)
    return false;
  Value x = skipExtension(mul.getLhs()), y = skipExtension(mul.getRhs());
  bool mulOk = (x == a && y == b) || (x == b && y == a);
  // Nothing but the extensions, the multiply and the add.
  size_t extensions = (x != mul.getLhs()) + (y != mul.getRhs());
  return mulOk && body.getOperations().size() == 3 + extensions;
}

/// One operand of the GEMM: which memref dimension each loop sits in.
struct Operand {
  Value buffer;
  MemRefType type;
  SmallVector<int64_t> strides;
  AffineMap map;

  /// The memref dimension of loop `loop`, or -1.
  int64_t dimOf(unsigned loop) const {
    for (unsigned r = 0; r < map.getNumResults(); ++r)
      if (map.getDimPosition(r) == loop)
        return r;
    return -1;
  }
  int64_t strideOf(unsigned loop) const {
    int64_t d = dimOf(loop);
    return d < 0 ? 0 : strides[d];
  }
};

struct ContractionToSgemm : OpRewritePattern<linalg::GenericOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(linalg::GenericOp op,
                                PatternRewriter &rewriter) const override {
    if (!op.hasPureBufferSemantics() || op.getNumDpsInputs() != 2 ||
        op.getNumDpsInits() != 1 || !isMultiplyAccumulate(op))
      return failure();
    // f32 C += f32 A B (sgemm), or f32 C += bf16 A B with f32 accumulation.
    SmallVector<Operand> operands;
    for (OpOperand &use : op->getOpOperands()) {
      auto type = dyn_cast<MemRefType>(use.get().getType());
      if (!type)
        return failure();
      Type element = type.getElementType();
      bool isOutput = op.isDpsInit(&use);
      if (!element.isF32() && (isOutput || !element.isBF16()))
        return failure();
      Operand operand{use.get(), type, {}, op.getMatchingIndexingMap(&use)};
      int64_t offset;
      if (failed(type.getStridesAndOffset(operand.strides, offset)) ||
          !operand.map.isProjectedPermutation())
        return failure();
      operands.push_back(operand);
    }
    const Operand &a = operands[0], &b = operands[1], &c = operands[2];
    Type operandType = a.type.getElementType();
    if (b.type.getElementType() != operandType)
      return failure();
    bool bf16 = operandType.isBF16();

    // Classify the loops.
    SmallVector<unsigned> batch;
    std::optional<unsigned> m, n, k;
    for (unsigned loop = 0; loop < op.getNumLoops(); ++loop) {
      bool inA = a.dimOf(loop) >= 0, inB = b.dimOf(loop) >= 0,
           inC = c.dimOf(loop) >= 0;
      bool reduction =
          op.getIteratorTypesArray()[loop] == utils::IteratorType::reduction;
      if (inA && inB && inC && !reduction)
        batch.push_back(loop);
      else if (inA && inC && !inB && !reduction && !m)
        m = loop;
      else if (inB && inC && !inA && !reduction && !n)
        n = loop;
      else if (inA && inB && !inC && reduction && !k)
        k = loop;
      else
        return failure();
    }
    if (!m || !n || !k)
      return failure();
    // Row-major C, and one unit stride in each of A and B.
    if (c.strideOf(*n) != 1)
      return failure();
    // The unit strides must be known statically; leading dimensions and
    // batch strides may be dynamic (read from the buffers' metadata).
    bool transA, transB;
    unsigned ldaLoop, ldbLoop, ldcLoop = *m;
    if (a.strideOf(*k) == 1) {
      transA = false;
      ldaLoop = *m;
    } else if (a.strideOf(*m) == 1) {
      transA = true;
      ldaLoop = *k;
    } else {
      return failure();
    }
    if (b.strideOf(*n) == 1) {
      transB = false;
      ldbLoop = *k;
    } else if (b.strideOf(*k) == 1) {
      transB = true;
      ldbLoop = *n;
    } else {
      return failure();
    }

    // C zeroed just before (a fill of 0 with only pure ops between): BLAS
    // overwrites C with beta = 0 instead, saving a pass over C.
    linalg::FillOp zeroFill = zeroFillOf(op, c.buffer);

    Location loc = op.getLoc();
    auto module = op->getParentOfType<ModuleOp>();
    func::FuncOp gemm = declareGemm(
        rewriter, module, bf16 ? "momart_gemm_bf16" : "cblas_sgemm");
    auto i32 = rewriter.getI32Type();
    auto i64 = rewriter.getI64Type();
    auto ptrType = LLVM::LLVMPointerType::get(rewriter.getContext());
    auto sizeOf = [&](unsigned loop) -> Value {
      for (const Operand &x : operands)
        if (int64_t d = x.dimOf(loop); d >= 0)
          return memref::DimOp::create(rewriter, loc, x.buffer, d);
      return Value();
    };
    auto toI32 = [&](Value index) -> Value {
      return arith::IndexCastOp::create(rewriter, loc, i32, index);
    };
    Value rows = sizeOf(*m), cols = sizeOf(*n), inner = sizeOf(*k);
    // Each operand's first element, offset and strides, from its metadata.
    struct View {
      Value aligned;
      mutable memref::ExtractStridedMetadataOp metadata;
      Value stride(const Operand &x, unsigned loop) const {
        return metadata.getStrides()[x.dimOf(loop)];
      }
    };
    auto view = [&](const Operand &x) {
      return View{
          memref::ExtractAlignedPointerAsIndexOp::create(rewriter, loc,
                                                         x.buffer),
          memref::ExtractStridedMetadataOp::create(rewriter, loc, x.buffer)};
    };
    View viewA = view(a), viewB = view(b), viewC = view(c);
    // BLAS asks a leading dimension of at least the row length. A dimension
    // of size 1 can have any stride (a MoD router's [N, 1] scores), so
    // raise the leading dimension to that minimum, which then changes no
    // address.
    auto leading = [&](const View &v, const Operand &x, unsigned loop,
                       Value rowLength) {
      return toI32(arith::MaxSIOp::create(rewriter, loc, v.stride(x, loop),
                                          rowLength));
    };
    Value lda = leading(viewA, a, ldaLoop, transA ? rows : inner);
    Value ldb = leading(viewB, b, ldbLoop, transB ? inner : cols);
    Value ldc = leading(viewC, c, ldcLoop, cols);

    // One call computes C[m0 : m0 + mSize, n0 : n0 + nSize] of the batch
    // element at `batchIndices`.
    auto emitCall = [&](OpBuilder &builder, ValueRange batchIndices, Value m0,
                        Value mSize, Value n0, Value nSize) {
      auto pointer = [&](const Operand &x, const View &v,
                         ArrayRef<std::pair<unsigned, Value>> starts) {
        Value elements = v.metadata.getOffset();
        auto advance = [&](unsigned loop, Value index) {
          elements = arith::AddIOp::create(
              builder, loc, elements,
              arith::MulIOp::create(builder, loc, index, v.stride(x, loop)));
        };
        for (auto [loop, index] : llvm::zip(batch, batchIndices))
          advance(loop, index);
        for (auto [loop, index] : starts)
          advance(loop, index);
        Value bytes = arith::MulIOp::create(
            builder, loc, elements,
            arith::ConstantIndexOp::create(
                builder, loc,
                x.type.getElementType().getIntOrFloatBitWidth() / 8));
        Value address = arith::AddIOp::create(builder, loc, v.aligned, bytes);
        Value asInt = arith::IndexCastOp::create(builder, loc, i64, address);
        return LLVM::IntToPtrOp::create(builder, loc, ptrType, asInt)
            .getResult();
      };
      Value one = arith::ConstantOp::create(builder, loc,
                                            builder.getF32FloatAttr(1.0f));
      Value beta = arith::ConstantOp::create(
          builder, loc, builder.getF32FloatAttr(zeroFill ? 0.0f : 1.0f));
      auto flag = [&](int32_t value) -> Value {
        return arith::ConstantOp::create(builder, loc,
                                         builder.getI32IntegerAttr(value));
      };
      auto size = [&](Value index) -> Value {
        return arith::IndexCastOp::create(builder, loc, i32, index);
      };
      func::CallOp::create(
          builder, loc, gemm,
          ValueRange{flag(kRowMajor), flag(transA ? kTrans : kNoTrans),
                     flag(transB ? kTrans : kNoTrans), size(mSize),
                     size(nSize), size(inner), one,
                     pointer(a, viewA, {{*m, m0}}), lda,
                     pointer(b, viewB, {{*n, n0}}), ldb, beta,
                     pointer(c, viewC, {{*m, m0}, {*n, n0}}), ldc});
    };

    // The calls run single-threaded BLAS inside one parallel loop over the
    // batch (experts, heads) and, when the batch has fewer elements than
    // there are threads, over row or column blocks of C (whichever side is
    // longer), so that GEMMs and the generated kernels share one thread
    // pool instead of two pools fighting over the cores.
    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value oneIndex = arith::ConstantIndexOp::create(rewriter, loc, 1);
    Value threads = arith::IndexCastOp::create(
        rewriter, loc, rewriter.getIndexType(),
        func::CallOp::create(rewriter, loc, declareMaxThreads(rewriter, module),
                             ValueRange{})
            .getResult(0));
    SmallVector<Value> lower, upper, steps;
    Value batchCount = oneIndex;
    for (unsigned loop : batch) {
      lower.push_back(zero);
      upper.push_back(sizeOf(loop));
      steps.push_back(oneIndex);
      batchCount = arith::MulIOp::create(rewriter, loc, batchCount,
                                         upper.back());
    }
    Value blocks = arith::MaxUIOp::create(
        rewriter, loc, oneIndex,
        arith::CeilDivUIOp::create(
            rewriter, loc, threads,
            arith::MaxUIOp::create(rewriter, loc, oneIndex, batchCount)));
    lower.push_back(zero);
    upper.push_back(blocks);
    steps.push_back(oneIndex);
    Value splitRows = arith::CmpIOp::create(
        rewriter, loc, arith::CmpIPredicate::uge, rows, cols);
    Value extent = arith::SelectOp::create(rewriter, loc, splitRows, rows, cols);
    scf::ParallelOp::create(
        rewriter, loc, lower, upper, steps,
        [&](OpBuilder &b, Location l, ValueRange ivs) {
          Value block = ivs.back();
          auto boundary = [&](Value blockIndex) {
            return arith::DivUIOp::create(
                b, l, arith::MulIOp::create(b, l, blockIndex, extent), blocks);
          };
          Value begin = boundary(block);
          Value end = boundary(arith::AddIOp::create(b, l, block, oneIndex));
          Value length = arith::SubIOp::create(b, l, end, begin);
          Value m0 = arith::SelectOp::create(b, l, splitRows, begin, zero);
          Value n0 = arith::SelectOp::create(b, l, splitRows, zero, begin);
          Value mSize = arith::SelectOp::create(b, l, splitRows, length, rows);
          Value nSize = arith::SelectOp::create(b, l, splitRows, cols, length);
          // Empty groups and experts (k = 0) make empty blocks: skip them.
          Value empty = arith::OrIOp::create(
              b, l,
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::eq, mSize,
                                    zero),
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::eq, nSize,
                                    zero));
          auto ifOp = scf::IfOp::create(b, l, empty, /*withElseRegion=*/true);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifOp.elseBlock());
          emitCall(b, ivs.drop_back(), m0, mSize, n0, nSize);
        });
    rewriter.eraseOp(op);
    if (zeroFill)
      rewriter.eraseOp(zeroFill);
    return success();
  }

  /// The `linalg.fill` of zero into `buffer` that precedes `op` with only
  /// side-effect-free ops in between, or null.
  static linalg::FillOp zeroFillOf(Operation *op, Value buffer) {
    Operation *previous = op->getPrevNode();
    while (previous && isMemoryEffectFree(previous))
      previous = previous->getPrevNode();
    auto fill = dyn_cast_or_null<linalg::FillOp>(previous);
    if (!fill || !fill.hasPureBufferSemantics() ||
        fill.getOutputs().front() != buffer ||
        !matchPattern(fill.getInputs().front(), m_AnyZeroFloat()))
      return nullptr;
    return fill;
  }

  static func::FuncOp declareMaxThreads(PatternRewriter &rewriter,
                                        ModuleOp module) {
    if (auto existing = module.lookupSymbol<func::FuncOp>("omp_get_max_threads"))
      return existing;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(module.getBody());
    auto decl = func::FuncOp::create(
        rewriter, module.getLoc(), "omp_get_max_threads",
        rewriter.getFunctionType({}, {rewriter.getI32Type()}));
    decl.setPrivate();
    return decl;
  }

  /// cblas_sgemm, or the CPU runtime's bf16 GEMM with the same arguments
  /// (runtime/device/cpu/GemmBf16.h).
  static func::FuncOp declareGemm(PatternRewriter &rewriter, ModuleOp module,
                                  StringRef name) {
    if (auto existing = module.lookupSymbol<func::FuncOp>(name))
      return existing;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(module.getBody());
    Type i32 = rewriter.getI32Type(), f32 = rewriter.getF32Type();
    auto ptr = LLVM::LLVMPointerType::get(rewriter.getContext());
    auto type = rewriter.getFunctionType(
        {i32, i32, i32, i32, i32, i32, f32, ptr, i32, ptr, i32, f32, ptr, i32},
        {});
    auto decl = func::FuncOp::create(rewriter, module.getLoc(), name, type);
    decl.setPrivate();
    return decl;
  }
};

struct ConvertLinalgToBlasPass
    : public momac::impl::ConvertLinalgToBlasBase<ConvertLinalgToBlasPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ContractionToSgemm>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
