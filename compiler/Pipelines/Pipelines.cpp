//===- Pipelines.cpp - The pass pipelines every target shares -------------===//

#include "compiler/Pipelines/Pipelines.h"

#include "compiler/Autodiff/Passes.h"
#include "compiler/Codegen/Passes.h"
#include "compiler/Conversion/Passes.h"
#include "compiler/Frontend/ModelToMoma.h"
#include "dialects/moma/Transforms/Passes.h"

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/BufferizationToMemRef/BufferizationToMemRef.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void momac::buildMomaOptimizationPipeline(OpPassManager &pm) {
  OpPassManager &func = pm.nest<func::FuncOp>();
  func.addPass(moma::createMomaReuseModalityPartition());
}

namespace {

/// The optimizer step's options for `adamW`, as @optimizer_step uses them.
momac::MomaSynthesizeOptimizerStepOptions
optimizerStepOptions(const momac::AdamWOptions &adamW) {
  momac::MomaSynthesizeOptimizerStepOptions optimizer;
  optimizer.beta1 = adamW.beta1;
  optimizer.beta2 = adamW.beta2;
  optimizer.eps = adamW.eps;
  optimizer.weightDecay = adamW.weightDecay;
  optimizer.gradClip = adamW.gradClip;
  return optimizer;
}

} // namespace

void momac::addTrainingStepPasses(OpPassManager &pm,
                                  const TrainingStepOptions &options) {
  buildMomaOptimizationPipeline(pm);
  pm.addPass(createMomaSynthesizeGrad());
  pm.addPass(createMomaSynthesizeOptimizerStep(
      optimizerStepOptions(options.adamW)));
  if (options.shardedStep) {
    // No clipping norm: the runtime clips the sharded step with the norm of
    // all ranks' shards (fsdp_grad_norm) and passes its AdamW the factor.
    MomaSynthesizeShardedStepOptions sharded;
    sharded.beta1 = options.adamW.beta1;
    sharded.beta2 = options.adamW.beta2;
    sharded.eps = options.adamW.eps;
    sharded.weightDecay = options.adamW.weightDecay;
    pm.addPass(createMomaSynthesizeShardedStep(sharded));
  }
  if (options.auxRouterSteps) {
    MomaSynthesizeGradOptions auxGrad;
    auxGrad.forwardName = kAuxForwardFunctionName.str();
    auxGrad.gradName = "grad_aux";
    auxGrad.lossName = "aux_loss";
    auxGrad.reportAll = true;
    pm.addPass(createMomaSynthesizeGrad(auxGrad));
    MomaSynthesizeOptimizerStepOptions auxStep =
        optimizerStepOptions(options.adamW);
    auxStep.forwardName = kAuxForwardFunctionName.str();
    auxStep.stepName = "optimizer_step_aux";
    auxStep.auxRouters = true;
    pm.addPass(createMomaSynthesizeOptimizerStep(auxStep));
  }
}

void momac::addSharedLoweringPasses(OpPassManager &pm,
                                    const SharedLoweringOptions &options) {
  ConvertMomaToLinalgOptions lowering;
  lowering.gemmOperandsInF32 = options.gemmOperandsInF32;
  pm.addPass(createConvertMomaToLinalg(lowering));
  pm.nest<func::FuncOp>().addPass(createConvertElementwiseToLinalgPass());
  pm.addPass(createCanonicalizerPass());
  // The sizes of dynamic token dimensions are read from kernels' results
  // (tensor.dim); asked of the kernels' operands instead, they no longer
  // count as readers that would keep a producer out of its consumer's loop.
  pm.addPass(memref::createResolveRankedShapeTypeResultDimsPass());
  // The gradient recomputes forward values (a GEMM's input, its bf16
  // rounding): merged before fusion, they stay one kernel, where fusion
  // would first copy them into different consumers. CSE also merges the
  // zero fills of different accumulators, which are split again so that
  // each stays fusable into its own consumer.
  pm.addPass(createCSEPass());
  pm.nest<func::FuncOp>().addPass(createCloneSharedFills());
  // Each layer's forward, backward and update becomes a call of a function
  // per kind of layer: what follows (fusion, tiling, bufferization, the
  // targets' passes, LLVM) sees each kind once, not once per layer. After
  // CSE, so that what the layers share (RoPE tables, a shared partition)
  // and what a backward shares with its forward stay computed once.
  if (options.outlineLayers)
    pm.addPass(createOutlineLayers());
  pm.nest<func::FuncOp>().addPass(createFuseElementwiseProducers());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(memref::createResolveRankedShapeTypeResultDimsPass());
  pm.nest<func::FuncOp>().addPass(createTileAndFuse());
  pm.addPass(createCanonicalizerPass());
  // eliminate-empty-tensors lets the kernels that produce an entry point's
  // results (AdamW's new parameters and moments, most gradients) write
  // straight into the caller's buffers instead of into a temporary and a
  // copy. It runs before cse, while every kernel still has its own
  // tensor.empty and fill: once cse shares a fill among several kernels,
  // giving it a result's buffer would let those kernels write into it too.
  //
  // It runs per function, so that the entry points are analyzed in parallel
  // (their one-shot analysis is most of the pass, and grows faster than
  // linearly with a function's length).
  pm.nest<func::FuncOp>().addPass(
      bufferization::createEmptyTensorEliminationPass());
  pm.addPass(createCSEPass());
  pm.nest<func::FuncOp>().addPass(createCloneSharedFills());
  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  // Upstream's deallocation pipeline (buildBufferDeallocationPipeline), with
  // the frees of what the layer functions return split off before the
  // deallocations are lowered: a call's result may be any of its operands
  // as far as the simplification knows, which would leave the layer
  // functions' results and the buffers passed to them in one deallocation
  // with a run-time alias check of every pair. They are split off before
  // the simplification, which then sees an entry point's last deallocation
  // without them: its pairwise alias queries grew with the square of the
  // depth (0.94 s of a 64-layer compile, 0.08 s so split first).
  memref::ExpandReallocPassOptions expandRealloc;
  expandRealloc.emitDeallocs = false;
  pm.addPass(memref::createExpandReallocPass(expandRealloc));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(bufferization::createOwnershipBasedBufferDeallocationPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createDeallocFreshCallResults());
  pm.nest<func::FuncOp>().addPass(
      bufferization::createBufferDeallocationSimplificationPass());
  pm.addPass(bufferization::createLowerDeallocationsPass());
  pm.addPass(createCSEPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createConvertBufferizationToMemRefPass());
  pm.nest<func::FuncOp>().addPass(createWriteResultsInPlace());
  // FSDP (momac --fsdp): once buffers are explicit, each unit's parameters
  // are gathered around their uses and its gradients reduce-scattered.
  pm.addPass(createShardParameters());
}

void momac::addHostLoweringToLLVMPasses(OpPassManager &pm) {
  // The passes that need no module run per function, the entry points in
  // parallel.
  OpPassManager &func = pm.nest<func::FuncOp>();
  func.addPass(memref::createExpandStridedMetadataPass());
  func.addPass(createLowerAffinePass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  // The entry points' loops become functions of their own, which the
  // artifact optimizes with the kernels while it compiles the long entry
  // points themselves unoptimized (emitHostObjects).
  pm.addPass(createOutlineHostLoops());
  OpPassManager &convertFunc = pm.nest<func::FuncOp>();
  // SCF-to-CF splits a block at every scf.if it lowers (the deallocation's
  // conditional frees): cut the entry points' one long block first.
  convertFunc.addPass(createSplitLongBlocks());
  convertFunc.addPass(createSCFToControlFlowPass());
  convertFunc.addPass(createConvertMathToLLVMPass());
  convertFunc.addPass(createArithToLLVMConversionPass());
  // The entry points take bare pointers (they carry `llvm.bareptr`, see
  // resultsToOutParams); the layer functions they call take memrefs with
  // their sizes, which a bare pointer cannot carry.
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
}
