//===- ModelToMoma.h - Model description to moma IR -------------*- C++ -*-===//
//
// Builds the forward pass of a model as one function in the moma dialect:
//
//   func.func @forward(%tokens: tensor<B x (S+1) x i32>,
//                      %p0: tensor<...> {moma.param = "tok_embeddings.weight"},
//                      ...) -> (loss, loss.<modality>..., [aux_loss])
//
// Parameters follow listParameters() order and carry their checkpoint names;
// results carry `moma.result` names. B is train.batch_size (one micro-batch).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_FRONTEND_MODELTOMOMA_H
#define MOMAC_COMPILER_FRONTEND_MODELTOMOMA_H

#include "dialects/moma/IR/MomaDialect.h"
#include "lib/config/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace momac {

/// The attribute names the front end puts on the forward function.
using mlir::moma::kParamAttrName;
using mlir::moma::kResultAttrName;
constexpr llvm::StringLiteral kForwardFunctionName = "forward";
/// The forward pass with causal routing (MODEL_SPEC section 6), for models
/// with auxiliary routers: results loss, loss.<modality> and, per router,
/// disagreement.<router>.
constexpr llvm::StringLiteral kCausalForwardFunctionName = "forward_causal";
/// The auxiliary routers' objective (MODEL_SPEC section 6) on the batch
/// routing of a frozen model: results aux_loss (the sum of each router's
/// BCE), then per router bce.<router> and confusion.<router> ([true
/// positives, predicted positives, chosen, decisions]); every parameter but
/// the auxiliary routers' is marked moma.no_grad.
constexpr llvm::StringLiteral kAuxForwardFunctionName = "forward_aux";

/// One step of causal decoding (momarun generate): for train.batch_size
/// sequences, each one new token (`tokens`, `positions`), routed by the
/// auxiliary routers, against per-layer key/value caches of seq_len rows
/// per sequence (`cache.layers.<l>.key`, `.value`, and `.valid`, 1 where a
/// row is written; a MoD layer writes only the rows of tokens its aux
/// router passes). Results: `logits` [batch, V] of the next token and the
/// updated caches under the same names.
constexpr llvm::StringLiteral kDecodeFunctionName = "decode_step";
/// The prompt in one call (momarun generate's prefill): the first
/// `prefill_rows` entries of `tokens`, `positions` and `sequence_ids`
/// ([batch_size * seq_len] each) are prompt tokens of any sequences, in
/// any order that keeps each sequence's positions ascending; they go
/// through the model as a batch with @decode_step's causal routing, each
/// attending to its sequence's cache rows up to its own position after the
/// call has written them. Results: `logits` [batch, V] at the rows
/// `last_rows` names (each sequence's last prompt token), and the caches.
constexpr llvm::StringLiteral kPrefillFunctionName = "prefill";
constexpr llvm::StringLiteral kPrefillRowsName = "prefill_rows";

/// Which forward function to build.
enum class ForwardKind {
  Training,          // @forward: batch routing, the section-7 loss
  CausalRouting,     // @forward_causal
  AuxRouterTraining, // @forward_aux
  Decode,            // @decode_step
  Prefill,           // @prefill
};
/// The argument that says how many rows of the tokens buffer hold the
/// micro-batch, in entry points compiled for any batch size up to
/// train.batch_size (MODEL_SPEC section 8).
constexpr llvm::StringLiteral kBatchRowsName = "batch_rows";

/// Loads the dialects the forward pass uses into `context`.
void loadFrontendDialects(mlir::MLIRContext &context);

/// Builds the module holding @forward. `sourceName` names the description in
/// locations (usually its path). With `dynamicBatch` (what artifacts use),
/// @forward takes any number of sequences up to train.batch_size through a
/// `batch_rows` argument, and its token dimensions are dynamic; without it
/// (--emit), exactly train.batch_size.
/// `kind` picks the function (models with aux_routers have all three):
/// @forward_causal routes a token iff its auxiliary score is above 0.5
/// (MODEL_SPEC section 6) and reports how often each router disagrees with
/// the batch choice; @forward_aux is the objective that trains them.
/// With `padModGroups` (the compiling target's choice, not the model's),
/// the modality groups inside MoD layers are padded to the layer's token
/// count and their counts stay in tensors, so no shape in the step depends
/// on a count the router decides (moma.padded_modality_partition); batch
/// routing only.
mlir::OwningOpRef<mlir::ModuleOp>
buildForwardModule(mlir::MLIRContext &context, const ModelConfig &config,
                   llvm::StringRef sourceName, bool dynamicBatch = false,
                   ForwardKind kind = ForwardKind::Training,
                   bool padModGroups = false);

} // namespace momac

#endif // MOMAC_COMPILER_FRONTEND_MODELTOMOMA_H
