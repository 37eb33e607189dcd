//===- KernelIteration.h - One iteration of a kernel's body -----*- C++ -*-===//
//
// What the targets' own loop nests for a bufferized kernel (a `linalg` op)
// share: one iteration of its body, with the inputs loaded at that
// iteration's elements and the outputs' values replaced by values the
// caller carries (a reduction's accumulators in registers). The CPU target
// builds sequential reduction loops from it
// (compiler/Target/CPU/LowerLinalgToCpuLoops.cpp), the CUDA target the
// partial reductions of a warp's lanes
// (compiler/Target/CUDA/ThreadDistribution.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CODEGEN_KERNELITERATION_H
#define MOMAC_COMPILER_CODEGEN_KERNELITERATION_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Builders.h"

namespace momac {

/// The indices `map` gives for the loop indices `ivs` (an affine.apply for
/// a result that is not a plain loop index).
llvm::SmallVector<mlir::Value> elementIndices(mlir::OpBuilder &b,
                                              mlir::Location loc,
                                              mlir::AffineMap map,
                                              mlir::ValueRange ivs);

/// Emits iteration `ivs` (one index per loop) of `kernel`'s body: each
/// buffer input loaded at its element (a scalar input used as it is), each
/// output's block argument replaced by `outputs`, linalg.index by its loop
/// index. Returns the values the body yields.
llvm::SmallVector<mlir::Value> emitKernelIteration(mlir::OpBuilder &b,
                                                   mlir::Location loc,
                                                   mlir::linalg::LinalgOp kernel,
                                                   mlir::ValueRange ivs,
                                                   mlir::ValueRange outputs);

} // namespace momac

#endif // MOMAC_COMPILER_CODEGEN_KERNELITERATION_H
