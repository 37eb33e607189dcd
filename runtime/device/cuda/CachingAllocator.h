//===- CachingAllocator.h - Device memory reused across steps ---*- C++ -*-===//
//
// A step allocates and frees hundreds of buffers (activations, tile
// scratch); cudaMalloc/cudaFree synchronize the device and cost tens of
// microseconds each. As PyTorch's CUDA allocator does, freed blocks are kept
// and handed out again: every step after the first allocates nothing from
// the driver. All work runs on one stream, so a block freed in stream order
// can be reused by the next allocation without an event.
//
// The allocator is plain C++ over a backend (the driver, or a fake in the
// unit tests), so its bookkeeping is tested without a GPU.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_CACHINGALLOCATOR_H
#define MOMAC_RUNTIME_DEVICE_CUDA_CACHINGALLOCATOR_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

namespace momac::cuda {

class CachingAllocator {
public:
  /// `allocate(bytes)` returns device memory or null when the device is
  /// out of memory; `release(pointer)` gives it back.
  CachingAllocator(std::function<void *(size_t)> allocate,
                   std::function<void(void *)> release);

  /// Caching off: every block is exactly the size asked for (at least 1
  /// byte) and goes back to the backend when freed. Slower, but a read or
  /// write past a buffer's end then leaves the driver's allocation instead
  /// of landing in the rounding slack, so compute-sanitizer sees it
  /// (MOMA_CUDA_CACHING_ALLOCATOR=0).
  void disableCaching();
  ~CachingAllocator();

  /// A block of at least `bytes` (rounded up: 512-byte multiples below
  /// 1 MiB, 2 MiB multiples above). Reuses the smallest cached block that
  /// fits and is at most twice the rounded size; otherwise asks the
  /// backend, and on failure releases the cache and asks again. Null when
  /// the device has no room even then. 0 bytes gives a 512-byte block.
  void *allocate(size_t bytes);
  /// Returns `pointer` (from allocate) to the cache. Null is ignored;
  /// false for a pointer this allocator did not hand out.
  bool free(void *pointer);
  /// Gives every cached block back to the backend.
  void releaseCached();

  struct Statistics {
    size_t bytesInUse = 0;      // handed out, not freed
    size_t bytesCached = 0;     // freed, kept for reuse
    size_t peakBytesInUse = 0;
    size_t backendAllocations = 0;
    size_t reuses = 0;
  };
  Statistics statistics() const;

  static size_t roundedSize(size_t bytes);

private:
  std::function<void *(size_t)> allocateBackend;
  std::function<void(void *)> releaseBackend;
  mutable std::mutex mutex;
  std::multimap<size_t, void *> cached;           // size -> block
  std::unordered_map<void *, size_t> blockSizes;  // every live or cached block
  Statistics stats;
  bool caching = true;
};

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_CACHINGALLOCATOR_H
