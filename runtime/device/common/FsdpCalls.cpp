//===- FsdpCalls.cpp - The collective calls of sharded steps --------------===//
//
// Linked into model.so (momart_fsdp): forwards to momarun's callbacks.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/common/FsdpAbi.h"

#include <cstdio>
#include <cstdlib>

namespace {
MomartFsdpCallbacks installed = {};

const MomartFsdpCallbacks &callbacks() {
  if (!installed.allGatherStart) {
    std::fprintf(stderr, "momart: a sharded (momac --fsdp) step ran without "
                         "momarun's FSDP runtime installed\n");
    std::abort();
  }
  return installed;
}
} // namespace

extern "C" void momart_fsdp_install(const MomartFsdpCallbacks *callbacks) {
  installed = callbacks ? *callbacks : MomartFsdpCallbacks{};
}

extern "C" void momart_fsdp_all_gather_start(int32_t unit, void *full) {
  callbacks().allGatherStart(installed.context, unit, static_cast<float *>(full));
}

extern "C" void momart_fsdp_all_gather_wait(int32_t unit, void *full) {
  callbacks().allGatherWait(installed.context, unit, static_cast<float *>(full));
}

extern "C" void momart_fsdp_reduce_scatter(int32_t unit, void *fullGradient) {
  callbacks().reduceScatter(installed.context, unit,
                            static_cast<float *>(fullGradient));
}
