//===- LinalgToBlas.cpp - Buffer contractions to cblas_sgemm --------------===//
//
// See Passes.td. The GEMMs of a MoMa step (projections, stacked experts,
// attention per head, and their gradients) are all `C += A B` contractions
// on buffers whose layouts are known at compile time, so the choice of
// transposes and leading dimensions is made here, once.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace momac {
#define GEN_PASS_DEF_CONVERTLINALGTOBLAS
#include "compiler/Conversion/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

// CBLAS enumerations.
constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

/// True when the body is `yield(c + a * b)` (either operand order).
bool isMultiplyAccumulate(linalg::GenericOp op) {
  Block &body = op.getRegion().front();
  if (body.getOperations().size() != 3)
    return false;
  auto mul = dyn_cast<arith::MulFOp>(&body.front());
  auto add =
      dyn_cast_or_null<arith::AddFOp>(mul ? mul->getNextNode() : nullptr);
  auto yield = dyn_cast<linalg::YieldOp>(body.getTerminator());
  if (!mul || !add || !yield || yield.getValues().size() != 1 ||
      yield.getValues()[0] != add.getResult())
    return false;
  Value a = body.getArgument(0), b = body.getArgument(1),
        c = body.getArgument(2);
  bool mulOk = (mul.getLhs() == a && mul.getRhs() == b) ||
               (mul.getLhs() == b && mul.getRhs() == a);
  bool addOk = (add.getLhs() == c && add.getRhs() == mul.getResult()) ||
               (add.getRhs() == c && add.getLhs() == mul.getResult());
  return mulOk && addOk;
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
    SmallVector<Operand> operands;
    for (OpOperand &use : op->getOpOperands()) {
      auto type = dyn_cast<MemRefType>(use.get().getType());
      if (!type || !type.getElementType().isF32())
        return failure();
      Operand operand{use.get(), type, {}, op.getMatchingIndexingMap(&use)};
      int64_t offset;
      if (failed(type.getStridesAndOffset(operand.strides, offset)) ||
          !operand.map.isProjectedPermutation())
        return failure();
      operands.push_back(operand);
    }
    const Operand &a = operands[0], &b = operands[1], &c = operands[2];

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

    Location loc = op.getLoc();
    auto module = op->getParentOfType<ModuleOp>();
    func::FuncOp sgemm = declareSgemm(rewriter, module);
    auto i32 = rewriter.getI32Type();
    auto i64 = rewriter.getI64Type();
    auto ptrType = LLVM::LLVMPointerType::get(rewriter.getContext());
    auto constI32 = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(rewriter, loc,
                                       rewriter.getI32IntegerAttr(int32_t(v)));
    };
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

    auto emitCall = [&](OpBuilder &builder, ValueRange batchIndices) {
      auto pointer = [&](const Operand &x, const View &v) {
        Value elements = v.metadata.getOffset();
        for (auto [loop, index] : llvm::zip(batch, batchIndices))
          elements = arith::AddIOp::create(
              builder, loc, elements,
              arith::MulIOp::create(builder, loc, index, v.stride(x, loop)));
        Value aligned = v.aligned;
        Value bytes = arith::MulIOp::create(
            builder, loc, elements,
            arith::ConstantIndexOp::create(builder, loc, 4));
        Value address = arith::AddIOp::create(builder, loc, aligned, bytes);
        Value asInt = arith::IndexCastOp::create(builder, loc, i64, address);
        return LLVM::IntToPtrOp::create(builder, loc, ptrType, asInt)
            .getResult();
      };
      Value one = arith::ConstantOp::create(builder, loc,
                                            builder.getF32FloatAttr(1.0f));
      func::CallOp::create(
          builder, loc, sgemm,
          ValueRange{constI32(kRowMajor), constI32(transA ? kTrans : kNoTrans),
                     constI32(transB ? kTrans : kNoTrans), toI32(rows),
                     toI32(cols), toI32(inner), one, pointer(a, viewA), lda,
                     pointer(b, viewB), ldb, one, pointer(c, viewC), ldc});
    };

    // Empty groups and experts (k = 0) make empty matrices: skip the call.
    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value empty = arith::OrIOp::create(
        rewriter, loc,
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq, rows,
                              zero),
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq, cols,
                              zero));
    scf::IfOp::create(
        rewriter, loc, empty,
        [&](OpBuilder &b, Location l) { scf::YieldOp::create(b, l); },
        [&](OpBuilder &b, Location l) {
          SmallVector<Value> lower, upper, steps;
          for (unsigned loop : batch) {
            lower.push_back(arith::ConstantIndexOp::create(b, l, 0));
            upper.push_back(sizeOf(loop));
            steps.push_back(arith::ConstantIndexOp::create(b, l, 1));
          }
          scf::buildLoopNest(b, l, lower, upper, steps,
                             [&](OpBuilder &nested, Location, ValueRange ivs) {
                               emitCall(nested, ivs);
                             });
          scf::YieldOp::create(b, l);
        });
    rewriter.eraseOp(op);
    return success();
  }

  static func::FuncOp declareSgemm(PatternRewriter &rewriter, ModuleOp module) {
    if (auto existing = module.lookupSymbol<func::FuncOp>("cblas_sgemm"))
      return existing;
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPointToStart(module.getBody());
    Type i32 = rewriter.getI32Type(), f32 = rewriter.getF32Type();
    auto ptr = LLVM::LLVMPointerType::get(rewriter.getContext());
    auto type = rewriter.getFunctionType(
        {i32, i32, i32, i32, i32, i32, f32, ptr, i32, ptr, i32, f32, ptr, i32},
        {});
    auto decl =
        func::FuncOp::create(rewriter, module.getLoc(), "cblas_sgemm", type);
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
