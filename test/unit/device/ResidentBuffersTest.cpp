//===- ResidentBuffersTest.cpp - Training state on a device, without one --===//
//
// The copies a training loop makes when its state stays in device memory:
// the state goes up once, the gradients and updates never come back except
// for a checkpoint, and a host write (a loaded checkpoint) goes up again.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/ResidentBuffers.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

using momac::cuda::ResidentBuffers;

namespace {

/// "Device" memory from malloc, with room for `capacity` bytes.
struct FakeDevice {
  size_t capacity = size_t(1) << 30;
  size_t used = 0;
  std::map<void *, size_t> live;

  ResidentBuffers::Backend backend() {
    return {[this](size_t bytes) -> void * {
              if (used + bytes > capacity)
                return nullptr;
              void *p = std::malloc(bytes);
              used += bytes;
              live[p] = bytes;
              return p;
            },
            [this](void *p) {
              used -= live[p];
              live.erase(p);
              std::free(p);
            },
            [](void *device, const void *host, size_t bytes) {
              std::memcpy(device, host, bytes);
            },
            [](void *host, const void *device, size_t bytes) {
              std::memcpy(host, device, bytes);
            }};
  }
};

float *on(void *device) { return static_cast<float *>(device); }

// A step reads the weights and writes the gradients; the optimizer reads
// both with the moments and updates weights and moments in place. Over
// three steps the weights and moments go up once and nothing comes down
// until the checkpoint asks for the weights.
TEST(ResidentBuffersTest, ATrainingLoopUploadsTheStateOnce) {
  FakeDevice fake;
  std::vector<float> weights(256, 1.0f), moments(256, 0.0f), grads(256);
  {
    ResidentBuffers resident(fake.backend());
    ASSERT_TRUE(resident.keep(weights.data(), 1024));
    ASSERT_TRUE(resident.keep(moments.data(), 1024));
    ASSERT_TRUE(resident.keep(grads.data(), 1024));
    EXPECT_EQ(resident.statistics().deviceBytes, 3072u);
    EXPECT_EQ(resident.statistics().uploads, 0u);
    for (int step = 0; step < 3; ++step) {
      // grad: reads the weights, writes the gradients.
      float *w = on(resident.device(weights.data(), /*read=*/true));
      float *g = on(resident.device(grads.data(), /*read=*/false));
      for (int i = 0; i < 256; ++i)
        g[i] = 0.5f * w[i];
      resident.deviceWrote(grads.data());
      // optimizer_step: reads all three, updates weights and moments.
      w = on(resident.device(weights.data(), true));
      g = on(resident.device(grads.data(), true));
      float *m = on(resident.device(moments.data(), true));
      for (int i = 0; i < 256; ++i) {
        m[i] += g[i];
        w[i] -= g[i];
      }
      resident.deviceWrote(weights.data());
      resident.deviceWrote(moments.data());
    }
    ResidentBuffers::Statistics stats = resident.statistics();
    EXPECT_EQ(stats.uploads, 2u); // weights and moments, once each
    EXPECT_EQ(stats.uploadedBytes, 2048u);
    EXPECT_EQ(stats.downloads, 0u);
    // The host copies are what they were until asked for.
    EXPECT_EQ(weights[0], 1.0f);
    resident.toHost(weights.data());
    resident.toHost(weights.data()); // current already: no second copy
    EXPECT_FLOAT_EQ(weights[0], 1.0f * 0.5f * 0.5f * 0.5f);
    EXPECT_EQ(moments[0], 0.0f);
    EXPECT_EQ(resident.statistics().downloads, 1u);
    EXPECT_EQ(resident.statistics().downloadedBytes, 1024u);
  }
  // Destroying it gives the device memory back.
  EXPECT_EQ(fake.used, 0u);
  EXPECT_TRUE(fake.live.empty());
}

// The host writes a kept buffer (a checkpoint loaded into it): the next
// call that reads it uploads the new values, once.
TEST(ResidentBuffersTest, AHostWriteIsUploadedBeforeTheNextRead) {
  FakeDevice fake;
  std::vector<float> weights(4, 1.0f);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(weights.data(), 16));
  EXPECT_EQ(on(resident.device(weights.data(), true))[0], 1.0f);
  weights[0] = 7.0f;
  EXPECT_EQ(on(resident.device(weights.data(), true))[0], 1.0f);
  resident.hostChanged(weights.data());
  EXPECT_EQ(on(resident.device(weights.data(), true))[0], 7.0f);
  EXPECT_EQ(on(resident.device(weights.data(), true))[0], 7.0f);
  EXPECT_EQ(resident.statistics().uploads, 2u);
  // A host write drops a device-side update that was never read back:
  // the host's values win.
  resident.deviceWrote(weights.data());
  resident.hostChanged(weights.data());
  resident.toHost(weights.data());
  EXPECT_EQ(resident.statistics().downloads, 0u);
}

// A result the call only writes is not uploaded first, even when its host
// side is newer.
TEST(ResidentBuffersTest, AWriteOnlyResultIsNotUploaded) {
  FakeDevice fake;
  std::vector<float> grads(4);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(grads.data(), 16));
  ASSERT_NE(resident.device(grads.data(), /*read=*/false), nullptr);
  resident.deviceWrote(grads.data());
  EXPECT_EQ(resident.statistics().uploads, 0u);
}

TEST(ResidentBuffersTest, BuffersThatAreNotKeptAreLeftAlone) {
  FakeDevice fake;
  std::vector<float> tokens(4, 3.0f);
  ResidentBuffers resident(fake.backend());
  EXPECT_FALSE(resident.isKept(tokens.data()));
  EXPECT_EQ(resident.device(tokens.data(), true), nullptr);
  resident.toHost(tokens.data());
  resident.hostChanged(tokens.data());
  resident.deviceWrote(tokens.data());
  EXPECT_EQ(tokens[0], 3.0f);
  EXPECT_EQ(resident.statistics().uploads + resident.statistics().downloads,
            0u);
}

TEST(ResidentBuffersTest, AFullDeviceOrAnotherSizeIsRefused) {
  FakeDevice fake;
  fake.capacity = 100;
  std::vector<float> a(16), b(16);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(a.data(), 64));
  EXPECT_TRUE(resident.keep(a.data(), 64)); // again: the same copy
  EXPECT_FALSE(resident.keep(a.data(), 32));
  EXPECT_FALSE(resident.keep(b.data(), 64)); // 128 > 100 bytes
  EXPECT_FALSE(resident.isKept(b.data()));
  EXPECT_EQ(resident.statistics().deviceBytes, 64u);
}

// A sharded trainer passes chunks of a kept shard (its AdamW runs chunk by
// chunk): an address inside a kept buffer is that place in the device
// copy; the first read uploads the whole buffer once, a write marks the
// whole buffer newer on the device, and the host gets all of it back.
TEST(ResidentBuffersTest, AnAddressInsideAKeptBufferIsItsPlaceOnTheDevice) {
  FakeDevice fake;
  std::vector<float> shard(64, 1.0f), outside(8, 0.0f);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(shard.data(), 64 * sizeof(float)));
  EXPECT_TRUE(resident.isKept(shard.data() + 63));
  EXPECT_FALSE(resident.isKept(shard.data() + 64)); // one past the end
  EXPECT_FALSE(resident.isKept(outside.data()));

  float *chunk = on(resident.device(shard.data() + 16, /*read=*/true));
  float *start = on(resident.device(shard.data(), /*read=*/true));
  ASSERT_NE(chunk, nullptr);
  EXPECT_EQ(chunk, start + 16);
  EXPECT_EQ(resident.statistics().uploads, 1u);
  EXPECT_EQ(resident.statistics().uploadedBytes, 64 * sizeof(float));

  chunk[0] = 5.0f; // the "kernel" writes the chunk
  resident.deviceWrote(shard.data() + 16);
  resident.toHost(shard.data() + 40);
  EXPECT_EQ(shard[16], 5.0f);
  EXPECT_EQ(resident.statistics().downloads, 1u);
  EXPECT_EQ(resident.statistics().downloadedBytes, 64 * sizeof(float));

}

// A call's buffer must fit in the kept buffer it starts in; writing only
// part of a kept buffer whose host side is newer uploads the rest first.
TEST(ResidentBuffersTest, APartialWriteKeepsTheRestAndStaysInBounds) {
  FakeDevice fake;
  std::vector<float> shard(16, 2.0f);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(shard.data(), 16 * sizeof(float)));
  EXPECT_EQ(resident.device(shard.data() + 8, false, 9 * sizeof(float)),
            nullptr);
  float *part = on(resident.device(shard.data() + 8, /*read=*/false,
                                   8 * sizeof(float)));
  ASSERT_NE(part, nullptr);
  EXPECT_EQ(resident.statistics().uploads, 1u); // the rest went up
  part[0] = 7.0f;
  resident.deviceWrote(shard.data() + 8);
  resident.toHost(shard.data());
  EXPECT_EQ(shard[0], 2.0f);
  EXPECT_EQ(shard[8], 7.0f);
  // A write of the whole buffer needs nothing uploaded.
  std::vector<float> whole(4, 1.0f);
  ASSERT_TRUE(resident.keep(whole.data(), 4 * sizeof(float)));
  EXPECT_NE(resident.device(whole.data(), false, 4 * sizeof(float)), nullptr);
  EXPECT_EQ(resident.statistics().uploads, 1u);
}

TEST(ResidentBuffersTest, AnOverlappingBufferIsRefused) {
  FakeDevice fake;
  std::vector<float> memory(128);
  ResidentBuffers resident(fake.backend());
  ASSERT_TRUE(resident.keep(memory.data() + 32, 64 * sizeof(float)));
  // One address has one device copy.
  EXPECT_FALSE(resident.keep(memory.data() + 40, 8 * sizeof(float)));
  EXPECT_FALSE(resident.keep(memory.data() + 16, 32 * sizeof(float)));
  EXPECT_FALSE(resident.keep(memory.data() + 90, 16 * sizeof(float)));
  EXPECT_TRUE(resident.keep(memory.data(), 32 * sizeof(float)));
  EXPECT_TRUE(resident.keep(memory.data() + 96, 32 * sizeof(float)));
}

} // namespace
