//===- FsdpAbi.h - What sharded steps call, and who answers -----*- C++ -*-===//
//
// A step compiled with `momac --fsdp` calls (compiler/Codegen
// ShardParameters.cpp):
//
//   void momart_fsdp_all_gather_start(int32_t unit, void *full);
//   void momart_fsdp_all_gather_wait(int32_t unit, void *full);
//   void momart_fsdp_reduce_scatter(int32_t unit, void *fullGradient);
//
// `full` is the unit's flat f32 buffer (manifest "fsdp" units): the gather
// fills it with every rank's shard, the reduce-scatter sums the ranks' full
// gradients into the caller's gradient shard. These symbols live in
// momart_fsdp, linked into model.so, and forward to the callbacks that
// momarun installs with momart_fsdp_install right after loading it: the
// shards and the communicator are momarun's (runtime/fsdp/ShardedModel.h).
// A callback that fails (a lost rank) does not return.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_COMMON_FSDPABI_H
#define MOMAC_RUNTIME_DEVICE_COMMON_FSDPABI_H

#include <cstdint>

extern "C" {

struct MomartFsdpCallbacks {
  void *context;
  void (*allGatherStart)(void *context, int32_t unit, float *full);
  void (*allGatherWait)(void *context, int32_t unit, float *full);
  void (*reduceScatter)(void *context, int32_t unit, float *fullGradient);
};

/// Installs the callbacks for the calls above (momarun does, by dlsym).
void momart_fsdp_install(const MomartFsdpCallbacks *callbacks);

void momart_fsdp_all_gather_start(int32_t unit, void *full);
void momart_fsdp_all_gather_wait(int32_t unit, void *full);
void momart_fsdp_reduce_scatter(int32_t unit, void *fullGradient);
}

#endif // MOMAC_RUNTIME_DEVICE_COMMON_FSDPABI_H
