//===- CudaTarget.h - The CUDA target's backends ----------------*- C++ -*-===//
//
// The CUDA target: the shared pipeline, the CUDA passes
// (compiler/Target/CUDA/Passes.td), serialization of the kernels (PTX from
// LLVM's NVPTX backend, cubin from ptxas, both in one fatbinary embedded in
// model.so), then the artifact steps every target shares
// (compiler/Target/Common/Artifact.h). model.so links the CUDA runtime
// archive (runtime/device/cuda: the mgpu* ABI, cuBLAS GEMMs, top-k) and
// exports its entry points for momarun.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_CUDA_CUDATARGET_H
#define MOMAC_COMPILER_TARGET_CUDA_CUDATARGET_H

#include "compiler/Target/CUDA/Passes.h"
#include "compiler/Target/Common/Artifact.h"

namespace momac {

/// Whether this momac can build CUDA artifacts (CUDA was found when it was
/// configured); when not, `why` says so.
bool cudaTargetAvailable(std::string &why);

/// What the CUDA target adds to the artifact steps (buildArtifact): host
/// code and sm_90 kernels, and besides model.so, manifest.json and
/// model.json, kernels.ptx and ptxas's report on each kernel,
/// kernels.ptxas.txt. `shardedStep`: the module holds the sharded step
/// (momac --fsdp), whose artifact carries NCCL. Without CUDA
/// (cudaTargetAvailable), building an artifact with it fails, saying why.
TargetBackend cudaTargetBackend(bool shardedStep,
                                const CudaCodegenOptions &codegen = {});

/// momac --target=cuda-emulated: a CPU artifact whose step is the CUDA
/// target's mapping run block by block and thread by thread on the host
/// (addCudaEmulationPasses). It needs no CUDA; it exists so that the e2e
/// tests check the mapping's numbers on machines without a GPU.
TargetBackend cudaEmulatedTargetBackend();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CUDA_CUDATARGET_H
