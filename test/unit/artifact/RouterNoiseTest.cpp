//===- RouterNoiseTest.cpp - The router noise momarun draws ---------------===//
//
// G' - G'' for independent standard Gumbel G', G'' is a standard logistic
// variable: mean 0, variance pi^2 / 3, P(X <= x) = 1 / (1 + e^-x).
//
//===----------------------------------------------------------------------===//

#include "runtime/artifact/LoadedArtifact.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

using namespace momac;

TEST(RouterNoise, IsStandardLogistic) {
  std::mt19937_64 rng(7);
  std::vector<float> noise(1 << 20);
  sampleGumbelNoise(rng, noise);
  double sum = 0, squares = 0;
  size_t belowOne = 0;
  for (float x : noise) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    squares += double(x) * x;
    belowOne += x <= 1.0f;
  }
  double n = double(noise.size());
  double mean = sum / n, variance = squares / n - mean * mean;
  // Standard errors: sqrt(pi^2/3 / n) ~ 0.0018 for the mean; the others
  // are looser still, so these bounds are several standard errors wide.
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(variance, M_PI * M_PI / 3, 0.03);
  EXPECT_NEAR(double(belowOne) / n, 1 / (1 + std::exp(-1.0)), 0.002);
}

TEST(RouterNoise, ContinuesFromTheSavedStreamState) {
  // What checkpoints rely on: a generator restored from its text form draws
  // what the original would have drawn next.
  std::mt19937_64 original(3);
  std::vector<float> first(100), second(100), resumed(100);
  sampleGumbelNoise(original, first);
  std::stringstream state;
  state << original;
  sampleGumbelNoise(original, second);
  std::mt19937_64 restored;
  state >> restored;
  sampleGumbelNoise(restored, resumed);
  EXPECT_EQ(second, resumed);
  EXPECT_NE(first, second);
}
