//===- Passes.h - Passes of the CUDA target ---------------------*- C++ -*-===//

#ifndef MOMAC_COMPILER_TARGET_CUDA_PASSES_H
#define MOMAC_COMPILER_TARGET_CUDA_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace momac {

#define GEN_PASS_DECL
#include "compiler/Target/CUDA/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/Target/CUDA/Passes.h.inc"

struct CudaCodegenOptions {
  /// The GPU architecture and PTX features the kernels are compiled for
  /// (Hopper: sm_90; MLIR 22 needs PTX 8.0 for it).
  std::string chip = "sm_90";
  std::string features = "+ptx80";
};

/// The CUDA target's passes after the shared pipeline (compiler/Pipelines):
/// GEMMs to cuBLAS calls, tiles to thread blocks, the rest of the host code
/// to device work on one stream, kernels outlined into one gpu.module and
/// lowered to NVVM, host code to the LLVM dialect with bare-pointer entry
/// points. The gpu.module is serialized afterwards (CudaTarget.cpp).
void addCudaCodegenPasses(mlir::OpPassManager &pm,
                          const CudaCodegenOptions &options = {});

/// For testing the CUDA mapping without a GPU: the same GEMM calls, tiles
/// and host-code mapping, then -moma-emulate-gpu-on-host and the host
/// lowering, so that the step runs on the CPU (with the CPU runtime's
/// versions of the CUDA library calls, runtime/device/cpu/CudaEmulation).
void addCudaEmulationPasses(mlir::OpPassManager &pm);

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CUDA_PASSES_H
