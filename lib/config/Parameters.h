//===- Parameters.h - The parameter table of a model ------------*- C++ -*-===//
//
// Names, shapes and optimizer treatment of every parameter (MODEL_SPEC
// sections 2 and 7). The compiler's function arguments, the runtime's
// checkpoints and the reports all take their parameters from this one list.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_CONFIG_PARAMETERS_H
#define MOMAC_LIB_CONFIG_PARAMETERS_H

#include "lib/config/ModelConfig.h"

#include <string>
#include <vector>

namespace momac {

enum class ParameterRole {
  Matrix,     // N(0, 0.02) init
  NormWeight, // init 1
  NormBias,   // init 0
};

struct ParameterSpec {
  std::string name;
  std::vector<int64_t> shape;
  ParameterRole role = ParameterRole::Matrix;
  /// Decoupled weight decay applies (MODEL_SPEC section 7).
  bool weightDecay = false;
  /// Auxiliary-router parameters are trained separately (section 6); the main
  /// training step leaves them untouched.
  bool auxRouter = false;

  int64_t numElements() const;
};

/// Every parameter of `config`, in checkpoint order: embeddings, layer by
/// layer, final norm, output.
std::vector<ParameterSpec> listParameters(const ModelConfig &config);

/// The weight-decay rule of section 7, by name suffix.
bool hasWeightDecay(llvm::StringRef name);

/// Whether `name` is a parameter of an auxiliary router (section 2:
/// `...moe.<group>.aux_router.*`, `...mod.aux_router.*`), which section 6
/// trains apart from the model.
bool isAuxRouterParameter(llvm::StringRef name);

} // namespace momac

#endif // MOMAC_LIB_CONFIG_PARAMETERS_H
