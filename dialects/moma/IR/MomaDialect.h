//===- MomaDialect.h - The moma dialect -------------------------*- C++ -*-===//

#ifndef MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
#define MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moma/IR/MomaDialect.h.inc"

namespace mlir::moma {
/// On an entry point's arguments and results: the buffer's name in the
/// artifact's interface ("layers.0.attention.wq.weight", "grad.<name>",
/// "tokens", "loss"), which the manifest lists and momarun binds by.
constexpr llvm::StringLiteral kParamAttrName = "moma.param";
constexpr llvm::StringLiteral kResultAttrName = "moma.result";
/// Marks a float argument of @forward that is data, not a parameter (the
/// router noise): autodiff gives it no gradient and the optimizer skips it.
constexpr llvm::StringLiteral kNoGradAttrName = "moma.no_grad";
/// On the module: the element type of GEMM operands (`bf16` for
/// train.precision "bf16", MODEL_SPEC section 7); absent means f32. The
/// lowering rounds the operands of every GEMM except the routers' to it and
/// accumulates in f32.
constexpr llvm::StringLiteral kGemmOperandTypeAttrName =
    "moma.gemm_operand_type";
/// On the module, with moma.gemm_operand_type: GEMM operands are rounded to
/// that type but stay f32 tensors, and the GEMMs run in f32. The products
/// are the same (a product of two bf16 values is exact in f32), without a
/// narrow copy to widen again: for a target whose f32 GEMM is faster than
/// its bf16 one (convert-moma-to-linalg{gemm-operands-in-f32}).
constexpr llvm::StringLiteral kGemmOperandsInF32AttrName =
    "moma.gemm_operands_in_f32";
/// FSDP (momac --fsdp, lib/config/ShardUnits.h). On a function: its
/// parameters and gradients are sharded across ranks, and
/// `moma.shard_units` (an array of strings) names its units. On each
/// parameter argument and gradient result: the index of its unit
/// (`moma.shard_unit`) and its offset in the unit's flat buffer, in
/// elements (`moma.shard_offset`).
constexpr llvm::StringLiteral kShardedParametersAttrName =
    "moma.sharded_parameters";
constexpr llvm::StringLiteral kShardUnitsAttrName = "moma.shard_units";
constexpr llvm::StringLiteral kShardUnitElementsAttrName =
    "moma.shard_unit_elements";
constexpr llvm::StringLiteral kShardUnitAttrName = "moma.shard_unit";
constexpr llvm::StringLiteral kShardOffsetAttrName = "moma.shard_offset";
/// On an entry point's result (a unit attribute): the result is written in
/// place of the argument of the same name (`moma.param`), whose buffer the
/// caller passes for it too. Only a result that one element-wise kernel
/// computes from that argument may be marked (element i is read before it
/// is written, and by nothing after): AdamW's parameters and moments. The
/// artifact's manifest says so ("in_place"); bindByName checks the binding.
constexpr llvm::StringLiteral kInPlaceAttrName = "moma.in_place";

/// On an entry point's argument (a unit attribute): a scalar the caller
/// passes in host memory wherever the step runs (`batch_rows`). The step's
/// host code reads it to size its work, so on a GPU it needs no copy to the
/// device and no read back. The manifest says so ("on_host").
constexpr llvm::StringLiteral kHostScalarAttrName = "moma.host_scalar";

/// On a private function (a unit attribute): one phase of one kind of layer
/// (its forward, backward or optimizer update) that -moma-outline-layers
/// moved out of the entry points, which call it once per layer of that
/// kind. Its code is host code like an entry point's (allocations, kernel
/// launches, library calls), compiled once for every layer that calls it;
/// it passes memrefs with their sizes (they have dynamic token dimensions),
/// where the entry points' ABI passes bare pointers.
constexpr llvm::StringLiteral kLayerFunctionAttrName = "moma.layer_function";

/// The layer an op computes, from its location: the front end and autodiff
/// name every op after its module, and "layers.3.attention" is layer 3.
/// None for the rest of the model (embeddings, the output, the loss).
std::optional<int64_t> layerOfLocation(Location loc);
} // namespace mlir::moma

#endif // MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
