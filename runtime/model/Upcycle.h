//===- Upcycle.h - Sparse upcycling of a checkpoint ---------------*- C++ -*-===//
//
// MODEL_SPEC section 7 (upcycling, the paper's section 2.5): the weights of a
// model with more experts per modality group, built from a checkpoint of one
// with fewer: every expert of a group starts as a copy of that group's single
// FFN (or of the dense FFN, for a dense source), expert routers start
// N(0, 0.02) and auxiliary routers fresh; everything else is copied.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_MODEL_UPCYCLE_H
#define MOMAC_RUNTIME_MODEL_UPCYCLE_H

#include "runtime/model/Weights.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace momac {

class SafetensorsFile;

/// How each target parameter was made.
struct UpcycleSummary {
  std::vector<std::string> copied;     // same name and shape
  std::vector<std::string> replicated; // one FFN copied into every expert
  std::vector<std::string> fresh;      // routers and auxiliary routers
};

/// The target model's weights (manifest order) from `source`, a weights file
/// or checkpoint of the stage-1 model (its optim.* moments are ignored).
/// Fresh parameters take the values `Weights::initialize(target, seed)`
/// gives them, so they equal `momarun init --seed` of the target. Errors
/// name the first parameter whose shapes do not correspond, a target
/// parameter with no source, or a source tensor the target has no place for.
llvm::Expected<Weights> upcycle(const Manifest &target,
                                const SafetensorsFile &source, uint64_t seed,
                                UpcycleSummary *summary = nullptr);

} // namespace momac

#endif // MOMAC_RUNTIME_MODEL_UPCYCLE_H
