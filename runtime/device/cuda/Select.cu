//===- Select.cu - Top-k for expert choice and MoD on the GPU -------------===//
//
// The compiled routing asks for each row's k smallest keys, ascending, at
// the row's front (runtime/device/cpu/Select.h: a key packs the score,
// descending, and the token index, ascending, so every key is distinct and
// the order is MODEL_SPEC's tie rule). On the GPU a whole-row sort does it:
// CUB's segmented radix sort, one segment per row (an expert's scores over
// its group's tokens), on the step's stream, its scratch from the caching
// allocator. Rows are up to a group's token count long, a few per call.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CudaRuntime.h"
#include "runtime/device/cuda/CudaState.h"

#include <cub/device/device_segmented_radix_sort.cuh>

#include <string>

using namespace momac::cuda;

namespace {

__global__ void rowOffsets(int64_t *offsets, int64_t rows, int64_t cols) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i <= rows)
    offsets[i] = i * cols;
}

bool checkRuntime(cudaError_t error, const char *call) {
  if (error == cudaSuccess)
    return true;
  recordError(std::string("momart_select_smallest_i64: ") + call + ": " +
              cudaGetErrorName(error) + " (" + cudaGetErrorString(error) +
              ")");
  return false;
}

} // namespace

extern "C" void momart_select_smallest_i64(int64_t *keys, int64_t rows,
                                           int64_t cols, int64_t k) {
  if (rows <= 0 || cols <= 1 || k <= 0 || !ready())
    return;
  cudaStream_t stream = stepStream();
  int64_t items = rows * cols;
  CachingAllocator &memory = allocator();
  auto *offsets =
      static_cast<int64_t *>(memory.allocate((rows + 1) * sizeof(int64_t)));
  auto *sorted = static_cast<int64_t *>(memory.allocate(items * sizeof(int64_t)));
  size_t scratchBytes = 0;
  void *scratch = nullptr;
  if (offsets && sorted &&
      checkRuntime(cub::DeviceSegmentedRadixSort::SortKeys(
                       nullptr, scratchBytes, keys, sorted, items, rows,
                       offsets, offsets + 1, 0, 64, stream),
                   "SortKeys (size)"))
    scratch = memory.allocate(scratchBytes);
  if (!offsets || !sorted || !scratch) {
    recordError("momart_select_smallest_i64: out of GPU memory for " +
                std::to_string(items) + " keys");
  } else {
    rowOffsets<<<(rows + 1 + 255) / 256, 256, 0, stream>>>(offsets, rows,
                                                             cols);
    if (checkRuntime(cudaGetLastError(), "rowOffsets") &&
        checkRuntime(cub::DeviceSegmentedRadixSort::SortKeys(
                         scratch, scratchBytes, keys, sorted, items, rows,
                         offsets, offsets + 1, 0, 64, stream),
                     "SortKeys"))
      // Only the first k of each row are promised; the whole row is
      // contiguous, so one copy moves them all.
      checkRuntime(cudaMemcpyAsync(keys, sorted, items * sizeof(int64_t),
                                   cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpyAsync");
  }
  // Freed in stream order: the next allocation on this stream runs after.
  memory.free(scratch);
  memory.free(sorted);
  memory.free(offsets);
  if (syncEachLaunch())
    afterLibraryCall("momart_select_smallest_i64 (CUB segmented sort, rows=" +
                     std::to_string(rows) + " cols=" + std::to_string(cols) +
                     ")");
}
