//===- BindByNameTest.cpp - Binding an entry point's buffers by name ------===//

#include "runtime/artifact/LoadedArtifact.h"

#include <gtest/gtest.h>

using namespace momac;

namespace {

EntryPointSpec adamwLike() {
  EntryPointSpec entry;
  entry.name = "optimizer_step";
  entry.arguments = {{"w", "F32", {4}}, {"grad.w", "F32", {4}}};
  entry.results = {{"w", "F32", {4}, /*inPlace=*/true},
                   {"grad_norm", "F32", {}}};
  return entry;
}

TEST(BindByName, ListsArgumentsThenResults) {
  float w[4], g[4], norm;
  llvm::StringMap<void *> arguments{{"w", w}, {"grad.w", g}};
  llvm::StringMap<void *> results{{"w", w}, {"grad_norm", &norm}};
  llvm::Expected<std::vector<void *>> buffers =
      bindByName(adamwLike(), arguments, results);
  ASSERT_TRUE(bool(buffers)) << llvm::toString(buffers.takeError());
  EXPECT_EQ(*buffers, (std::vector<void *>{w, g, w, &norm}));
}

TEST(BindByName, InPlaceResultNeedsItsArgumentsBuffer) {
  float w[4], other[4], g[4], norm;
  llvm::StringMap<void *> arguments{{"w", w}, {"grad.w", g}};
  llvm::StringMap<void *> results{{"w", other}, {"grad_norm", &norm}};
  llvm::Expected<std::vector<void *>> buffers =
      bindByName(adamwLike(), arguments, results);
  ASSERT_FALSE(bool(buffers));
  EXPECT_EQ(llvm::toString(buffers.takeError()),
            "result 'w' of optimizer_step is updated in place: it must be "
            "bound to its argument's buffer");
}

TEST(BindByName, NamesAnUnboundBuffer) {
  float w[4], norm;
  llvm::StringMap<void *> arguments{{"w", w}};
  llvm::StringMap<void *> results{{"w", w}, {"grad_norm", &norm}};
  llvm::Expected<std::vector<void *>> buffers =
      bindByName(adamwLike(), arguments, results);
  ASSERT_FALSE(bool(buffers));
  EXPECT_NE(llvm::toString(buffers.takeError())
                .find("no buffer for argument 'grad.w' of optimizer_step"),
            std::string::npos);
}

} // namespace
