//===- SelectTest.cpp - momart_select_smallest_i64 ------------------------===//

#include "runtime/device/cpu/Select.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace {

TEST(Select, EachRowGetsItsSmallestKeysInAscendingOrder) {
  std::mt19937_64 rng(7);
  const int64_t rows = 3, cols = 1000, k = 37;
  std::vector<int64_t> keys(rows * cols);
  for (int64_t &key : keys)
    key = int64_t(rng() >> 2);
  std::vector<int64_t> expected = keys;
  momart_select_smallest_i64(keys.data(), rows, cols, k);
  for (int64_t r = 0; r < rows; ++r) {
    auto begin = expected.begin() + r * cols;
    std::sort(begin, begin + cols);
    EXPECT_TRUE(std::equal(begin, begin + k, keys.begin() + r * cols))
        << "row " << r;
    // The row is still a permutation of its keys.
    std::vector<int64_t> row(keys.begin() + r * cols,
                             keys.begin() + (r + 1) * cols);
    std::sort(row.begin(), row.end());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), begin)) << "row " << r;
  }
}

TEST(Select, KAtLeastTheRowLengthSortsTheWholeRow) {
  std::vector<int64_t> keys = {5, 3, 9, 1};
  momart_select_smallest_i64(keys.data(), 1, 4, 4);
  EXPECT_EQ(keys, (std::vector<int64_t>{1, 3, 5, 9}));
  keys = {5, 3, 9, 1};
  momart_select_smallest_i64(keys.data(), 1, 4, 100);
  EXPECT_EQ(keys, (std::vector<int64_t>{1, 3, 5, 9}));
}

TEST(Select, EmptySizesTouchNothing) {
  std::vector<int64_t> keys = {5, 3, 9, 1};
  momart_select_smallest_i64(keys.data(), 1, 4, 0);
  momart_select_smallest_i64(keys.data(), 0, 4, 2);
  momart_select_smallest_i64(keys.data(), 1, 0, 2);
  momart_select_smallest_i64(keys.data(), -1, -4, -2);
  EXPECT_EQ(keys, (std::vector<int64_t>{5, 3, 9, 1}));
}

} // namespace
