//===- CachingAllocatorTest.cpp - Device memory reuse, without a device ---===//

#include "runtime/device/cuda/CachingAllocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>

using momac::cuda::CachingAllocator;

namespace {

/// A backend over malloc that counts and can run out of memory.
struct FakeDevice {
  size_t capacity = size_t(1) << 30;
  size_t used = 0;
  int allocations = 0, releases = 0;
  std::set<void *> live;

  CachingAllocator allocator() {
    return CachingAllocator(
        [this](size_t bytes) -> void * {
          if (used + bytes > capacity)
            return nullptr;
          void *p = std::malloc(bytes);
          used += bytes;
          ++allocations;
          live.insert(p);
          sizes[p] = bytes;
          return p;
        },
        [this](void *p) {
          used -= sizes[p];
          ++releases;
          live.erase(p);
          std::free(p);
        });
  }
  std::map<void *, size_t> sizes;
};

TEST(CachingAllocatorTest, RoundsSizes) {
  EXPECT_EQ(CachingAllocator::roundedSize(0), 512u);
  EXPECT_EQ(CachingAllocator::roundedSize(1), 512u);
  EXPECT_EQ(CachingAllocator::roundedSize(512), 512u);
  EXPECT_EQ(CachingAllocator::roundedSize(513), 1024u);
  EXPECT_EQ(CachingAllocator::roundedSize((1 << 20) - 1), size_t(1) << 20);
  EXPECT_EQ(CachingAllocator::roundedSize((1 << 20) + 1), size_t(2) << 20);
  EXPECT_EQ(CachingAllocator::roundedSize((3 << 20)), size_t(4) << 20);
}

// A second step that allocates what the first did asks the device for
// nothing.
TEST(CachingAllocatorTest, ReusesFreedBlocksAcrossSteps) {
  FakeDevice device;
  CachingAllocator allocator = device.allocator();
  for (int step = 0; step < 3; ++step) {
    void *a = allocator.allocate(1000);
    void *b = allocator.allocate(5 << 20);
    void *c = allocator.allocate(1000);
    ASSERT_TRUE(a && b && c);
    EXPECT_NE(a, c);
    EXPECT_TRUE(allocator.free(c));
    EXPECT_TRUE(allocator.free(a));
    EXPECT_TRUE(allocator.free(b));
  }
  CachingAllocator::Statistics stats = allocator.statistics();
  EXPECT_EQ(device.allocations, 3);
  EXPECT_EQ(stats.backendAllocations, 3u);
  EXPECT_EQ(stats.reuses, 6u);
  EXPECT_EQ(stats.bytesInUse, 0u);
  EXPECT_EQ(stats.bytesCached, 2 * 1024u + (6u << 20));
  EXPECT_EQ(stats.peakBytesInUse, 2 * 1024u + (6u << 20));
}

// Best fit, but a small request does not take a block more than twice its
// size.
TEST(CachingAllocatorTest, BestFitWithinTwiceTheSize) {
  FakeDevice device;
  CachingAllocator allocator = device.allocator();
  void *big = allocator.allocate(64 << 20);
  void *medium = allocator.allocate(4096);
  allocator.free(big);
  allocator.free(medium);
  EXPECT_EQ(allocator.allocate(3000), medium); // 3072 -> the 4096 block
  void *small = allocator.allocate(1000);      // not the 64 MiB block
  EXPECT_NE(small, big);
  EXPECT_EQ(device.allocations, 3);
}

// Out of memory: the cache goes back to the device and the request is
// tried again; when even that fails, null.
TEST(CachingAllocatorTest, ReleasesTheCacheWhenTheDeviceIsFull) {
  FakeDevice device;
  device.capacity = 10 << 20;
  CachingAllocator allocator = device.allocator();
  void *a = allocator.allocate(6 << 20);
  ASSERT_TRUE(a);
  allocator.free(a);
  // 8 MiB: the cached 6 MiB block is too small and the device has 4 MiB
  // left, so the cache is released and the request tried again.
  void *b = allocator.allocate(8 << 20);
  ASSERT_TRUE(b);
  EXPECT_EQ(device.releases, 1);
  EXPECT_EQ(allocator.statistics().bytesCached, 0u);
  // Nothing cached and 2 MiB free: no room.
  EXPECT_EQ(allocator.allocate(4 << 20), nullptr);
  EXPECT_EQ(allocator.statistics().bytesInUse, size_t(8) << 20);
}

TEST(CachingAllocatorTest, RefusesForeignAndDoubleFrees) {
  FakeDevice device;
  CachingAllocator allocator = device.allocator();
  int local = 0;
  EXPECT_FALSE(allocator.free(&local));
  void *a = allocator.allocate(100);
  EXPECT_TRUE(allocator.free(a));
  EXPECT_FALSE(allocator.free(a));
  EXPECT_TRUE(allocator.free(nullptr));
}

TEST(CachingAllocatorTest, ReleaseCachedReturnsEverythingFreed) {
  FakeDevice device;
  {
    CachingAllocator allocator = device.allocator();
    void *a = allocator.allocate(100);
    void *b = allocator.allocate(100);
    allocator.free(a);
    allocator.releaseCached();
    EXPECT_EQ(device.releases, 1);
    EXPECT_EQ(device.live.count(b), 1u);
    allocator.free(b);
  }
  // The destructor gives back what is cached.
  EXPECT_EQ(device.releases, 2);
  EXPECT_TRUE(device.live.empty());
}

} // namespace

// Caching off (MOMA_CUDA_CACHING_ALLOCATOR=0, for compute-sanitizer): exact
// sizes from the backend, each given back when freed, nothing reused.
TEST(CachingAllocatorTest, WithoutCachingEveryBlockIsExactAndReleased) {
  FakeDevice device;
  CachingAllocator allocator = device.allocator();
  void *cachedBefore = allocator.allocate(100);
  allocator.free(cachedBefore);
  allocator.disableCaching();
  EXPECT_EQ(device.releases, 1) << "what was cached goes back";
  void *a = allocator.allocate(100);
  EXPECT_EQ(device.sizes[a], 100u);
  void *empty = allocator.allocate(0);
  EXPECT_EQ(device.sizes[empty], 1u);
  EXPECT_TRUE(allocator.free(a));
  EXPECT_EQ(device.live.count(a), 0u);
  void *again = allocator.allocate(100);
  EXPECT_EQ(allocator.statistics().reuses, 0u);
  EXPECT_TRUE(allocator.free(again));
  EXPECT_TRUE(allocator.free(empty));
  EXPECT_FALSE(allocator.free(empty)) << "freed twice";
  EXPECT_TRUE(device.live.empty());
  EXPECT_EQ(allocator.statistics().bytesInUse, 0u);
}
