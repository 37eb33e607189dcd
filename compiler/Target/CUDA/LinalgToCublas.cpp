//===- LinalgToCublas.cpp - Buffer contractions to cuBLAS GEMM calls ------===//
//
// See Passes.td. The matching is the one every target shares
// (compiler/Codegen/BufferGemm.h); what is CUDA's is the call: one
// strided-batched GEMM over the innermost batch loop (a group's experts, an
// attention's heads), since expert choice gives every expert of a group the
// same k and so the same shape.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"

#include "compiler/Codegen/BufferGemm.h"
#include "compiler/Codegen/GreedyRewrite.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/PatternMatch.h"

namespace momac {
#define GEN_PASS_DEF_CONVERTLINALGTOCUBLAS
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// momart_cuda_gemm_{f32,bf16}(transA, transB, m, n, k,
///   A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch):
/// row-major C[i] = A[i] B[i] + beta C[i] for i < batch, on the step's
/// stream (runtime/device/cuda/CublasGemm.h).
func::FuncOp declareGemm(OpBuilder &builder, ModuleOp module, StringRef name) {
  if (auto existing = module.lookupSymbol<func::FuncOp>(name))
    return existing;
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(module.getBody());
  Type i32 = builder.getI32Type(), i64 = builder.getI64Type(),
       f32 = builder.getF32Type();
  Type ptr = LLVM::LLVMPointerType::get(builder.getContext());
  auto type = builder.getFunctionType({i32, i32, i32, i32, i32, ptr, i64, i64,
                                       ptr, i64, i64, f32, ptr, i64, i64, i32},
                                      {});
  auto decl = func::FuncOp::create(builder, module.getLoc(), name, type);
  decl.setPrivate();
  return decl;
}

struct ContractionToCublas : OpInterfaceRewritePattern<linalg::LinalgOp> {
  using OpInterfaceRewritePattern::OpInterfaceRewritePattern;

  LogicalResult matchAndRewrite(linalg::LinalgOp op,
                                PatternRewriter &rewriter) const override {
    // Kernels inside a tile or a launch are the generated code's own.
    if (op->getParentOfType<scf::ForallOp>() ||
        op->getParentOfType<gpu::LaunchOp>())
      return failure();
    FailureOr<momac::BufferGemm> match = momac::matchBufferGemm(op);
    if (failed(match))
      return failure();
    const momac::BufferGemm &gemm = *match;
    Location loc = op.getLoc();
    func::FuncOp callee =
        declareGemm(rewriter, op->getParentOfType<ModuleOp>(),
                    gemm.bf16 ? "momart_cuda_gemm_bf16" : "momart_cuda_gemm_f32");
    momac::GemmAddressing addressing(rewriter, gemm);
    Type i32 = rewriter.getI32Type(), i64 = rewriter.getI64Type();
    auto cast = [&](OpBuilder &b, Type type, Value index) -> Value {
      return arith::IndexCastOp::create(b, loc, type, index);
    };
    Value m = addressing.sizeOf(gemm.m), n = addressing.sizeOf(gemm.n),
          k = addressing.sizeOf(gemm.k);
    Value lda = addressing.lda(), ldb = addressing.ldb(),
          ldc = addressing.ldc();
    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
    // The innermost batch loop is the call's batch; outer ones, if any,
    // are host loops around the call.
    Value batch = one, strideA = zero, strideB = zero, strideC = zero;
    ArrayRef<unsigned> outer = gemm.batchLoops;
    if (!gemm.batchLoops.empty()) {
      unsigned inner = gemm.batchLoops.back();
      outer = outer.drop_back();
      batch = addressing.sizeOf(inner);
      strideA = addressing.strideOf(gemm.a, inner);
      strideB = addressing.strideOf(gemm.b, inner);
      strideC = addressing.strideOf(gemm.c, inner);
    }
    SmallVector<Value> lbs, ubs, steps;
    for (unsigned loop : outer) {
      lbs.push_back(zero);
      ubs.push_back(addressing.sizeOf(loop));
      steps.push_back(one);
    }
    Value beta = arith::ConstantOp::create(
        rewriter, loc, rewriter.getF32FloatAttr(gemm.zeroFill ? 0.0f : 1.0f));
    scf::buildLoopNest(
        rewriter, loc, lbs, ubs, steps,
        [&](OpBuilder &b, Location, ValueRange outerIvs) {
          SmallVector<Value> batchStart(outerIvs);
          if (!gemm.batchLoops.empty())
            batchStart.push_back(zero);
          auto flag = [&](bool value) -> Value {
            return arith::ConstantOp::create(b, loc,
                                             b.getI32IntegerAttr(value));
          };
          func::CallOp::create(
              b, loc, callee,
              ValueRange{flag(gemm.transA), flag(gemm.transB), cast(b, i32, m),
                         cast(b, i32, n), cast(b, i32, k),
                         addressing.pointer(b, gemm.a, batchStart),
                         cast(b, i64, lda), cast(b, i64, strideA),
                         addressing.pointer(b, gemm.b, batchStart),
                         cast(b, i64, ldb), cast(b, i64, strideB), beta,
                         addressing.pointer(b, gemm.c, batchStart),
                         cast(b, i64, ldc), cast(b, i64, strideC),
                         cast(b, i32, batch)});
        });
    rewriter.eraseOp(op);
    if (gemm.zeroFill)
      rewriter.eraseOp(gemm.zeroFill);
    return success();
  }
};

struct ConvertLinalgToCublasPass
    : momac::impl::ConvertLinalgToCublasBase<ConvertLinalgToCublasPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ContractionToCublas>(&getContext());
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
