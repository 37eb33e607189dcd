//===- OpenBlasCoreTest.cpp - The OpenBLAS kernels for a CPU --------------===//
//
// The rule for replacing OpenBLAS's own choice. The probe (a child process
// that loads OpenBLAS) runs in momarun: test/e2e/test_reliability.py.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/OpenBlasCore.h"

#include <gtest/gtest.h>

using momac::cpu::betterOpenBlasCore;

TEST(OpenBlasCore, FallbackKernelsAreReplacedByTheCpusVectorUnits) {
  // A Xeon that OpenBLAS 0.3.21 does not know (family 6 model 207).
  EXPECT_EQ(betterOpenBlasCore("Prescott", true, true), "SkylakeX");
  EXPECT_EQ(betterOpenBlasCore("Nehalem", true, true), "SkylakeX");
  EXPECT_EQ(betterOpenBlasCore("Sandybridge", true, false), "Haswell");
  EXPECT_EQ(betterOpenBlasCore("Core2", true, false), "Haswell");
}

TEST(OpenBlasCore, KernelsThatUseTheVectorUnitsAreKept) {
  for (const char *core :
       {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SAPPHIRERAPIDS"}) {
    EXPECT_EQ(betterOpenBlasCore(core, true, true), "") << core;
    EXPECT_EQ(betterOpenBlasCore(core, true, false), "") << core;
  }
}

TEST(OpenBlasCore, NothingIsSetWithoutAvx2OrWithoutAnAnswer) {
  EXPECT_EQ(betterOpenBlasCore("Prescott", false, false), "");
  EXPECT_EQ(betterOpenBlasCore("", true, true), "");
}
