//===- Select.h - Top-k selection for compiled routing -----------*- C++ -*-===//
//
// The selection routine that compiled expert-choice and MoD routing call
// (compiler/Conversion/MomaToLinalg/RoutingHelpers.h, selectSmallestKeys).
// Keys encode (score descending, token index ascending) as one int64, so
// the k smallest keys of a row are the row's top k under MODEL_SPEC's tie
// rule, and every key is distinct.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CPU_SELECT_H
#define MOMAC_RUNTIME_DEVICE_CPU_SELECT_H

#include <cstdint>

extern "C" {

/// For each of `rows` rows of `cols` keys (row-major, contiguous), moves the
/// min(k, cols) smallest keys to the front of the row in ascending order;
/// the rest of the row keeps the other keys in unspecified order.
/// O(cols + k log k) per row. Negative sizes are treated as 0.
void momart_select_smallest_i64(int64_t *keys, int64_t rows, int64_t cols,
                                int64_t k);
}

#endif // MOMAC_RUNTIME_DEVICE_CPU_SELECT_H
