# The MLIR and LLVM headers that momac's passes include take most of each
# compile: on 2 cores, parsing them alone was 20 s of a 26 s compile of a
# pass (compiler/Codegen/TileAndFuse.cpp). They are compiled once into a
# precompiled header that every compiler library and tool reuses.
#
# ccache does not cache a compile that uses a precompiled header (it runs
# the compiler instead); -DMOMAC_PRECOMPILED_HEADERS=OFF restores caching.
option(MOMAC_PRECOMPILED_HEADERS "Precompile the MLIR headers of the compiler" ON)

set(MOMAC_MLIR_HEADERS
  <mlir/Dialect/Affine/IR/AffineOps.h>
  <mlir/Dialect/Arith/IR/Arith.h>
  <mlir/Dialect/Bufferization/IR/Bufferization.h>
  <mlir/Dialect/Func/IR/FuncOps.h>
  <mlir/Dialect/LLVMIR/LLVMDialect.h>
  <mlir/Dialect/Linalg/IR/Linalg.h>
  <mlir/Dialect/Math/IR/Math.h>
  <mlir/Dialect/MemRef/IR/MemRef.h>
  <mlir/Dialect/SCF/IR/SCF.h>
  <mlir/Dialect/Tensor/IR/Tensor.h>
  <mlir/IR/Builders.h>
  <mlir/IR/IRMapping.h>
  <mlir/IR/PatternMatch.h>
  <mlir/Interfaces/SideEffectInterfaces.h>
  <mlir/Pass/Pass.h>
  <mlir/Pass/PassManager.h>
  <mlir/Transforms/DialectConversion.h>
  <mlir/Transforms/GreedyPatternRewriteDriver.h>
)

# Called after the compiler's targets exist: each of `targets` reuses the
# one precompiled header (same flags, so one compile serves them all).
function(momac_precompile_mlir_headers)
  if(NOT MOMAC_PRECOMPILED_HEADERS)
    return()
  endif()
  set(source ${PROJECT_BINARY_DIR}/MomaMlirHeaders.cpp)
  file(WRITE ${source} "// The translation unit of the precompiled MLIR headers.\n")
  add_library(MomaMlirHeaders OBJECT ${source})
  target_precompile_headers(MomaMlirHeaders PRIVATE ${MOMAC_MLIR_HEADERS})
  foreach(target ${ARGN})
    if(TARGET ${target})
      target_precompile_headers(${target} REUSE_FROM MomaMlirHeaders)
    endif()
  endforeach()
endfunction()
