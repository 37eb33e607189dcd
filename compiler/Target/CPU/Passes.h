//===- Passes.h - Passes of the CPU target ----------------------*- C++ -*-===//

#ifndef MOMAC_COMPILER_TARGET_CPU_PASSES_H
#define MOMAC_COMPILER_TARGET_CPU_PASSES_H

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/OpenMP/OpenMPDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace momac {

#define GEN_PASS_DECL
#include "compiler/Target/CPU/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/Target/CPU/Passes.h.inc"

/// The CPU target's passes after the shared pipeline
/// (compiler/Pipelines): GEMMs to BLAS calls, parallel loops to OpenMP, and
/// everything to the LLVM dialect with bare-pointer entry points.
void addCpuCodegenPasses(mlir::OpPassManager &pm);

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CPU_PASSES_H
