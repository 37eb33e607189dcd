//===- Select.cpp - Top-k selection for compiled routing ------------------===//

#include "runtime/device/cpu/Select.h"

#include <algorithm>

extern "C" void momart_select_smallest_i64(int64_t *keys, int64_t rows,
                                           int64_t cols, int64_t k) {
  if (rows <= 0 || cols <= 0 || k <= 0)
    return;
  k = std::min(k, cols);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t *row = keys + r * cols;
    if (k < cols)
      std::nth_element(row, row + k, row + cols);
    std::sort(row, row + k);
  }
}
