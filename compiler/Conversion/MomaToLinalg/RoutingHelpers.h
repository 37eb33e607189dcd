//===- RoutingHelpers.h - Padding and top-k selection -----------*- C++ -*-===//
//
// Shared by the routing, Mixture-of-Depths, auxiliary-router and data
// movement patterns: the padded token lists of moma.padded_modality_partition
// (and the ops that read them), and the top-k selection of expert choice and
// MoD routing.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ROUTINGHELPERS_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ROUTINGHELPERS_H

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"

namespace momac::lowering {

//===----------------------------------------------------------------------===//
// Padding (moma.padded_modality_partition and the ops that read its lists)
//===----------------------------------------------------------------------===//

/// Row `at[0]` of `source` at the trailing position `at[1:]`; with
/// `padded`, a row at or past the source's row count is padding and reads
/// zero (its index clamped to row 0 so the read stays in bounds).
mlir::Value extractRow(mlir::OpBuilder &b, mlir::Location loc,
                       mlir::Value source, llvm::ArrayRef<mlir::Value> at,
                       bool padded);

/// The one-element i32 count `valid` (how many leading rows are tokens,
/// moma.padded_modality_partition), as index. On a GPU the count lives in
/// device memory: read it where it is used (in a kernel, or in the scalar
/// code that consumes it), not in host code that feeds a later kernel.
mlir::Value validCount(mlir::OpBuilder &b, mlir::Location loc,
                       mlir::Value valid);

/// Whether `row` (index) lies before the count `valid`: a token, not
/// padding.
mlir::Value isRowValid(mlir::OpBuilder &b, mlir::Location loc, mlir::Value row,
                       mlir::Value valid);

//===----------------------------------------------------------------------===//
// Top-k selection (expert choice and MoD)
//===----------------------------------------------------------------------===//

/// The name of the runtime's selection routine (runtime/device/cpu/Select.h):
///   void momart_select_smallest_i64(int64_t *keys, int64_t rows,
///                                   int64_t cols, int64_t k)
/// moves the k smallest keys of each row to the row's front, ascending.
/// Every target's runtime provides it (CPU: std::nth_element + std::sort).
constexpr llvm::StringLiteral kSelectSmallestFn = "momart_select_smallest_i64";

/// The token index stored in the low bits of a selection key.
constexpr int64_t kSelectionIndexBits = 31;

/// key[e, i] for scores [n, E] -> [E, n] i64: ascending keys are descending
/// scores with ties to the lower index (MODEL_SPEC sections 4 and 5), so the
/// k smallest keys of row e are expert e's top k. The key is the score's
/// bits mapped to an order-preserving unsigned integer and complemented
/// (descending), shifted above the 31-bit token index (B * S fits i32).
/// The order is total: -0 counts as +0, and NaN sorts after every number
/// (a token scored NaN is chosen last, never out of range).
/// With `valid` (a one-element i32 count), rows at or past valid[0] are
/// padding: their keys take the largest score part, so they sort after
/// every token, NaN scores included (those tie, and go by index).
mlir::Value selectionKeys(KernelBuilder &kb, mlir::Value scores,
                          mlir::Value valid = mlir::Value());

/// The token index of a selection key, as index.
mlir::Value tokenOfKey(mlir::OpBuilder &b, mlir::Location loc,
                       mlir::Value key);

/// `keys` [rows, cols] i64 with the k smallest keys of each row moved to its
/// front in ascending order (the rest in no particular order): a call to the
/// runtime's selection routine, O(cols + k log k) per row. The keys are
/// written into a buffer of their own, selected in place and read back as a
/// tensor, so bufferization sees one fresh allocation.
mlir::Value selectSmallestKeys(KernelBuilder &kb, mlir::Value keys,
                               mlir::Value k);

/// ceil(fraction * count) in IEEE double, as an index (MODEL_SPEC 4 and 5).
mlir::Value ceilFraction(mlir::OpBuilder &b, mlir::Location loc,
                         mlir::Value count, double numerator,
                         double denominator);
mlir::Value ceilFraction(KernelBuilder &kb, mlir::Value count,
                         double numerator, double denominator);

/// Expert choice's k = min(n, ceil(c * n / E)) for n tokens (MODEL_SPEC
/// section 4), as an index.
mlir::Value expertCapacity(mlir::OpBuilder &b, mlir::Location loc,
                           mlir::Value n, double capacityFactor,
                           int64_t experts);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ROUTINGHELPERS_H
