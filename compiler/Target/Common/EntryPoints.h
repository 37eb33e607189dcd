//===- EntryPoints.h - The calling convention of compiled steps -*- C++ -*-===//
//
// A compiled entry point is called by the runtime as
//
//   void momac_<name>(void **buffers);
//
// with one pointer per argument (token ids, then parameters, in manifest
// order) followed by one per result (scalars and gradients), each pointing at
// a dense row-major buffer of the manifest's shape. Results are written in
// place; nothing is allocated across the boundary.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_COMMON_ENTRYPOINTS_H
#define MOMAC_COMPILER_TARGET_COMMON_ENTRYPOINTS_H

#include "lib/artifact/Manifest.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace momac {

/// Describes `func` (tensor arguments named by `moma.param`, results by
/// `moma.result`) as an entry point. Fails on dynamic shapes. A function
/// with sharded parameters (moma.sharded_parameters) takes neither its
/// parameters nor its gradients: -moma-shard-parameters removes them, and
/// the runtime provides them through its momart_fsdp_* calls.
mlir::FailureOr<EntryPointSpec> describeEntryPoint(mlir::func::FuncOp func);

/// The FSDP units of the module's function with sharded parameters, for
/// the manifest; empty when it has none.
std::vector<ManifestShardUnit> describeShardUnits(mlir::ModuleOp module);
mlir::FailureOr<EntryPointSpec> describeEntryPoint(mlir::func::FuncOp func);

/// Tensor level: turns the results of `func` into trailing memref arguments
/// that the function writes (destination-passing style), so that the
/// bufferized function returns nothing.
mlir::LogicalResult resultsToOutParams(mlir::func::FuncOp func);

/// LLVM dialect level: adds `llvm.func @momac_<name>(!llvm.ptr)` that unpacks
/// the buffer array and calls `<name>`, whose memref arguments were lowered
/// to bare pointers.
mlir::LogicalResult addPackedEntryPoint(mlir::ModuleOp module,
                                        llvm::StringRef name);

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_COMMON_ENTRYPOINTS_H
