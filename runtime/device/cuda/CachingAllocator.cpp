//===- CachingAllocator.cpp - Device memory reused across steps -----------===//

#include "runtime/device/cuda/CachingAllocator.h"

#include <algorithm>

using namespace momac::cuda;

namespace {
constexpr size_t kSmallGranularity = 512;
constexpr size_t kLargeThreshold = size_t(1) << 20;
constexpr size_t kLargeGranularity = size_t(2) << 20;
} // namespace

CachingAllocator::CachingAllocator(std::function<void *(size_t)> allocate,
                                   std::function<void(void *)> release)
    : allocateBackend(std::move(allocate)), releaseBackend(std::move(release)) {
}

CachingAllocator::~CachingAllocator() { releaseCached(); }

size_t CachingAllocator::roundedSize(size_t bytes) {
  size_t granularity =
      bytes < kLargeThreshold ? kSmallGranularity : kLargeGranularity;
  return std::max(granularity, (bytes + granularity - 1) / granularity *
                                   granularity);
}

void CachingAllocator::disableCaching() {
  releaseCached();
  std::lock_guard<std::mutex> lock(mutex);
  caching = false;
}

void *CachingAllocator::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex);
  size_t size = caching ? roundedSize(bytes) : std::max<size_t>(bytes, 1);
  // Best fit among cached blocks, but not one more than twice as large:
  // a small buffer must not pin a large one.
  auto fit = cached.lower_bound(size);
  if (fit != cached.end() && fit->first <= 2 * size) {
    void *block = fit->second;
    size_t blockSize = fit->first;
    cached.erase(fit);
    stats.bytesCached -= blockSize;
    stats.bytesInUse += blockSize;
    stats.peakBytesInUse = std::max(stats.peakBytesInUse, stats.bytesInUse);
    ++stats.reuses;
    return block;
  }
  void *block = allocateBackend(size);
  if (!block && !cached.empty()) {
    for (auto &[cachedSize, cachedBlock] : cached) {
      releaseBackend(cachedBlock);
      blockSizes.erase(cachedBlock);
    }
    cached.clear();
    stats.bytesCached = 0;
    block = allocateBackend(size);
  }
  if (!block)
    return nullptr;
  blockSizes[block] = size;
  stats.bytesInUse += size;
  stats.peakBytesInUse = std::max(stats.peakBytesInUse, stats.bytesInUse);
  ++stats.backendAllocations;
  return block;
}

bool CachingAllocator::free(void *pointer) {
  if (!pointer)
    return true;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = blockSizes.find(pointer);
  if (found == blockSizes.end())
    return false;
  if (!caching) {
    releaseBackend(pointer);
    stats.bytesInUse -= found->second;
    blockSizes.erase(found);
    return true;
  }
  for (auto [begin, end] = cached.equal_range(found->second); begin != end;
       ++begin)
    if (begin->second == pointer)
      return false; // freed twice
  cached.emplace(found->second, pointer);
  stats.bytesInUse -= found->second;
  stats.bytesCached += found->second;
  return true;
}

void CachingAllocator::releaseCached() {
  std::lock_guard<std::mutex> lock(mutex);
  for (auto &[size, block] : cached) {
    releaseBackend(block);
    blockSizes.erase(block);
  }
  cached.clear();
  stats.bytesCached = 0;
}

CachingAllocator::Statistics CachingAllocator::statistics() const {
  std::lock_guard<std::mutex> lock(mutex);
  return stats;
}
