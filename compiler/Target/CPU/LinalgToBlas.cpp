//===- LinalgToBlas.cpp - Buffer contractions to BLAS-style GEMM calls ----===//
//
// See Passes.td. The GEMMs of a MoMa step (projections, stacked experts,
// attention per head, and their gradients) are all `C += A B` contractions
// on buffers whose layouts are known at compile time, so the choice of
// transposes and leading dimensions is made here, once.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"

#include "compiler/Codegen/BufferGemm.h"
#include "compiler/Codegen/GreedyRewrite.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace momac {
#define GEN_PASS_DEF_CONVERTLINALGTOBLAS
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

// CBLAS enumerations.
constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct ContractionToSgemm : OpInterfaceRewritePattern<linalg::LinalgOp> {
  using OpInterfaceRewritePattern::OpInterfaceRewritePattern;

  LogicalResult matchAndRewrite(linalg::LinalgOp op,
                                PatternRewriter &rewriter) const override {
    FailureOr<momac::BufferGemm> match = momac::matchBufferGemm(op);
    if (failed(match))
      return failure();
    const momac::BufferGemm &gemm = *match;
    // A GEMM inside a tile (attention's, per head and block) already runs
    // on one of the threads: one call, no loop of its own. Batched ones
    // there (decoding's per-head scores) stay loops.
    bool insideTile = op->getParentOfType<scf::ForallOp>() ||
                      op->getParentOfType<scf::ParallelOp>();
    if (insideTile && !gemm.batchLoops.empty())
      return rewriter.notifyMatchFailure(op, "a batched GEMM inside a tile");
    const momac::GemmOperand &a = gemm.a, &b = gemm.b, &c = gemm.c;
    linalg::FillOp zeroFill = gemm.zeroFill;

    Location loc = op.getLoc();
    auto module = op->getParentOfType<ModuleOp>();
    func::FuncOp gemmFunc = declareGemm(
        rewriter, module, gemm.bf16 ? "momart_gemm_bf16" : "momart_sgemm");
    auto i32 = rewriter.getI32Type();
    auto toI32 = [&](Value index) -> Value {
      return arith::IndexCastOp::create(rewriter, loc, i32, index);
    };
    momac::GemmAddressing addressing(rewriter, gemm);
    Value rows = addressing.sizeOf(gemm.m), cols = addressing.sizeOf(gemm.n),
          inner = addressing.sizeOf(gemm.k);
    Value lda = toI32(addressing.lda()), ldb = toI32(addressing.ldb()),
          ldc = toI32(addressing.ldc());
    bool transA = gemm.transA, transB = gemm.transB;
    unsigned m = gemm.m, n = gemm.n;

    // One call computes C[m0 : m0 + mSize, n0 : n0 + nSize] of the batch
    // element at `batchIndices`.
    auto emitCall = [&](OpBuilder &builder, ValueRange batchIndices, Value m0,
                        Value mSize, Value n0, Value nSize) {
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
      auto pointer = [&](const momac::GemmOperand &x,
                         ArrayRef<std::pair<unsigned, Value>> starts) {
        return addressing.pointer(builder, x, batchIndices, starts);
      };
      func::CallOp::create(
          builder, loc, gemmFunc,
          ValueRange{flag(kRowMajor), flag(transA ? kTrans : kNoTrans),
                     flag(transB ? kTrans : kNoTrans), size(mSize),
                     size(nSize), size(inner), one,
                     pointer(a, {{m, m0}}), lda,
                     pointer(b, {{n, n0}}), ldb, beta,
                     pointer(c, {{m, m0}, {n, n0}}), ldc});
    };

    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    if (insideTile) {
      emitCall(rewriter, ValueRange{}, zero, rows, zero, cols);
      rewriter.eraseOp(op);
      if (zeroFill)
        rewriter.eraseOp(zeroFill);
      return success();
    }

    // The calls run single-threaded BLAS inside one parallel loop over the
    // batch (experts, heads) and, when the batch has fewer elements than
    // there are threads, over row or column blocks of C (whichever side is
    // longer), so that GEMMs and the generated kernels share one thread
    // pool instead of two pools fighting over the cores.
    Value oneIndex = arith::ConstantIndexOp::create(rewriter, loc, 1);
    Value threads = arith::IndexCastOp::create(
        rewriter, loc, rewriter.getIndexType(),
        func::CallOp::create(rewriter, loc, declareMaxThreads(rewriter, module),
                             ValueRange{})
            .getResult(0));
    SmallVector<Value> lower, upper, steps;
    Value batchCount = oneIndex;
    for (unsigned loop : gemm.batchLoops) {
      lower.push_back(zero);
      upper.push_back(addressing.sizeOf(loop));
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

  /// The CPU runtime's f32 GEMM (cblas_sgemm's arguments; OpenBLAS, or
  /// kernels for a few rows and for small products,
  /// runtime/device/cpu/GemmF32.h) or its bf16 GEMM
  /// with the same arguments (GemmBf16.h).
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
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
