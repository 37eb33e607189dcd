//===- ModelToMoma.cpp - Model description to moma IR ---------------------===//
//
// A direct transcription of MODEL_SPEC sections 3 to 6. Each layer gets a
// name location ("layers.3.moe.image"), so diagnostics and dumps point at the
// part of the model they concern.
//
// The front end emits one moma.modality_partition per MoE layer on purpose:
// sharing partitions is a decision for -moma-reuse-modality-partition, which
// knows when token sets are equal.
//
//===----------------------------------------------------------------------===//

#include "compiler/Frontend/ModelToMoma.h"

#include "dialects/moma/IR/MomaOps.h"
#include "lib/config/Parameters.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/StringMap.h"

#include <array>
#include <cmath>

using namespace mlir;
using namespace momac;

namespace {

/// The tokens a block sees: all of the micro-batch, or the subset a MoD
/// router selected. Every field has one row per token.
struct TokenSet {
  Value hidden;      // [n, d] f32
  Value ids;         // [n] i32, input token ids
  Value positions;   // [n] i32
  Value sequenceIds; // [n] i32
  /// Modality groups over these tokens are padded to n, their counts kept
  /// in tensors (moma.padded_modality_partition): a MoD layer's tokens when
  /// the target sizes its launches by bounds rather than read counts back.
  bool padGroups = false;
};

/// Token ranges as the flat "lo, hi, lo, hi" lists the routing ops take.
ArrayAttr rangeLists(Builder &b, ArrayRef<std::vector<TokenRange>> lists) {
  SmallVector<Attribute> attrs;
  for (const std::vector<TokenRange> &list : lists) {
    SmallVector<int64_t> bounds;
    for (const TokenRange &range : list) {
      bounds.push_back(range.lo);
      bounds.push_back(range.hi);
    }
    attrs.push_back(b.getDenseI64ArrayAttr(bounds));
  }
  return b.getArrayAttr(attrs);
}

class ForwardBuilder {
public:
  ForwardBuilder(MLIRContext &context, const ModelConfig &config,
                 StringRef sourceName, ForwardKind kind, bool padModGroups)
      : config(config), padModGroups(padModGroups), b(&context),
        sourceName(sourceName.str()),
        f32(b.getF32Type()), i32(b.getI32Type()),
        causal(kind == ForwardKind::CausalRouting ||
               kind == ForwardKind::Decode || kind == ForwardKind::Prefill),
        decode(kind == ForwardKind::Decode || kind == ForwardKind::Prefill),
        prefill(kind == ForwardKind::Prefill),
        auxTraining(kind == ForwardKind::AuxRouterTraining) {}

  /// With `dynamicBatch`, the entry points take up to train.batch_size
  /// sequences: the tokens argument keeps its [batch_size, S+1] bound and a
  /// `batch_rows` argument says how many of its rows hold the micro-batch;
  /// every token dimension is then dynamic.
  OwningOpRef<ModuleOp> build(bool dynamicBatch);

private:
  // Types.
  RankedTensorType tensor(ArrayRef<int64_t> shape, Type element) {
    return RankedTensorType::get(shape, element);
  }
  RankedTensorType scalar() { return tensor({}, f32); }
  /// [rows of `like`, features] with `like`'s (possibly dynamic) row count.
  RankedTensorType rowsLike(Value like, int64_t features) {
    int64_t rows = cast<RankedTensorType>(like.getType()).getDimSize(0);
    return tensor({rows, features}, f32);
  }

  Location loc(const Twine &name) {
    return NameLoc::get(b.getStringAttr(name),
                        FileLineColLoc::get(b.getStringAttr(sourceName), 0, 0));
  }
  Value param(const std::string &name) { return params.lookup(name); }

  Value rmsNorm(Location at, Value x, const std::string &weight) {
    return moma::RMSNormOp::create(b, at, x.getType(), x, param(weight),
                                   b.getF64FloatAttr(config.normEps));
  }
  Value linear(Location at, Value x, const std::string &weight) {
    auto w = cast<RankedTensorType>(param(weight).getType());
    auto xt = cast<RankedTensorType>(x.getType());
    SmallVector<int64_t> shape(xt.getShape());
    shape.back() = w.getDimSize(w.getRank() - 2);
    return moma::LinearOp::create(b, at, tensor(shape, f32), x, param(weight));
  }
  Value add(Location at, Value x, Value y) {
    return arith::AddFOp::create(b, at, x, y);
  }
  /// `padded`: indices at or past the source's rows read zeros.
  Value gather(Location at, Value source, Value indices, bool padded = false) {
    auto src = cast<RankedTensorType>(source.getType());
    auto idx = cast<RankedTensorType>(indices.getType());
    SmallVector<int64_t> shape(idx.getShape());
    llvm::append_range(shape, src.getShape().drop_front());
    return moma::GatherTokensOp::create(
        b, at, tensor(shape, src.getElementType()), source, indices, padded);
  }
  Value zerosLike(Location at, Value like) {
    Value zero = arith::ConstantOp::create(b, at, b.getF32FloatAttr(0.0f));
    auto type = cast<RankedTensorType>(like.getType());
    SmallVector<Value> dynamicSizes;
    if (type.isDynamicDim(0))
      dynamicSizes.push_back(tensor::DimOp::create(b, at, like, 0));
    return tensor::SplatOp::create(b, at, zero, type, dynamicSizes);
  }
  /// The noise of group rows `rows` for a router with `experts` outputs in
  /// layer `l`, whose module input is `v`: rows[i] of v takes
  /// gumbel_noise[l, rows[i], 0 : experts].
  Value routerNoise(Location at, int64_t l, Value v, Value rows,
                    int64_t experts, bool padded) {
    int64_t rowsIn = cast<RankedTensorType>(v.getType()).getDimSize(0);
    OpFoldResult rowCount =
        ShapedType::isDynamic(rowsIn)
            ? OpFoldResult(tensor::DimOp::create(b, at, v, 0).getResult())
            : OpFoldResult(b.getIndexAttr(rowsIn));
    SmallVector<OpFoldResult> offsets = {b.getIndexAttr(l), b.getIndexAttr(0),
                                         b.getIndexAttr(0)};
    SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1), rowCount,
                                       b.getIndexAttr(experts)};
    SmallVector<OpFoldResult> strides(3, b.getIndexAttr(1));
    Value layerNoise = tensor::ExtractSliceOp::create(
        b, at, tensor({rowsIn, experts}, f32), gumbelNoise, offsets, sizes,
        strides);
    return gather(at, layerNoise, rows, padded);
  }
  /// An empty module for the description (its model name, and its GEMM
  /// precision for the lowering); the builder inserts into it.
  OwningOpRef<ModuleOp> newModule() {
    OwningOpRef<ModuleOp> module =
        ModuleOp::create(FileLineColLoc::get(b.getStringAttr(sourceName), 0, 0));
    module->getOperation()->setAttr("moma.model",
                                    b.getStringAttr(config.name));
    if (config.train.precision == Precision::BF16)
      module->getOperation()->setAttr(moma::kGemmOperandTypeAttrName,
                                      TypeAttr::get(b.getBF16Type()));
    b.setInsertionPointToEnd(module->getBody());
    return module;
  }
  /// Ends `func` by returning `results`, named `names` (moma.result), which
  /// become its result types.
  void returnResults(func::FuncOp func, Location at, ValueRange results,
                     ArrayRef<std::string> names) {
    func::ReturnOp::create(b, at, results);
    func.setFunctionType(
        b.getFunctionType(func.getArgumentTypes(), results.getTypes()));
    func.setAllResultAttrs(
        SmallVector<DictionaryAttr>(results.size(), b.getDictionaryAttr({})));
    for (auto [i, name] : llvm::enumerate(names))
      func.setResultAttr(i, kResultAttrName, b.getStringAttr(name));
  }
  void addAuxLoss(Value loss) {
    auxLoss = auxLoss ? add(loss.getLoc(), auxLoss, loss) : loss;
  }

  Value attention(const std::string &layer, const TokenSet &tokens, Value x);
  Value feedForward(const std::string &layer, int64_t l, const TokenSet &tokens,
                    Value v);
  Value momaModule(const std::string &layer, int64_t l, const TokenSet &tokens,
                   Value v);
  Value block(const std::string &layer, int64_t l, const TokenSet &tokens);
  Value modLayer(const std::string &layer, int64_t l, const TokenSet &tokens);

  const ModelConfig &config;
  /// MoD layers pad their modality groups (TokenSet::padGroups).
  bool padModGroups;
  OpBuilder b;
  std::string sourceName;
  Type f32, i32;
  llvm::StringMap<Value> params;
  /// [n_layers, tokens, max experts] router logit noise, when moe.gumbel.
  Value gumbelNoise;
  Value auxLoss;
  /// Route by the auxiliary routers (MODEL_SPEC section 6) instead of over
  /// the batch, and report each router's disagreement with the batch.
  bool causal;
  /// Build the auxiliary routers' objective instead of the model's loss.
  bool auxTraining;
  /// One decoding step against key/value caches (implies causal routing).
  bool decode;
  /// Decoding a prompt's tokens in one call (@prefill; implies decode).
  bool prefill;
  /// Decoding: each layer's caches (key, value, valid) as arguments, and as
  /// updated by the layer's attention.
  SmallVector<std::array<Value, 3>> caches, updatedCaches;
  OwningOpRef<ModuleOp> buildDecodeStep();
  /// Results after the losses: per router, its disagreement (causal) or its
  /// BCE and confusion counts (aux training).
  SmallVector<std::pair<std::string, Value>> routerResults;

  /// An auxiliary router's objective term and metrics, against the batch
  /// choice `indices` (MODEL_SPEC section 6).
  /// With `valid`, only that many leading rows of `predicted` are tokens.
  void addAuxObjective(Location at, const std::string &router,
                       Value predicted, Value indices, Value valid = Value()) {
    Value bce = moma::AuxRouterLossOp::create(b, at, scalar(), predicted,
                                              indices, valid);
    addAuxLoss(bce);
    if (!auxTraining)
      return;
    routerResults.push_back({"bce." + router, bce});
    routerResults.push_back(
        {"confusion." + router,
         moma::AuxRouterConfusionOp::create(b, at, tensor({4}, f32), predicted,
                                            indices, valid)});
  }
};

Value ForwardBuilder::attention(const std::string &layer,
                                const TokenSet &tokens, Value x) {
  std::string prefix = layer + "attention.";
  Location at = loc(layer + "attention");
  Value q = linear(at, x, prefix + "wq.weight");
  Value k = linear(at, x, prefix + "wk.weight");
  Value v = linear(at, x, prefix + "wv.weight");
  if (config.qkNorm) {
    auto eps = b.getF64FloatAttr(config.normEps);
    q = moma::HeadLayerNormOp::create(b, at, q.getType(), q,
                                      param(prefix + "q_norm.weight"),
                                      param(prefix + "q_norm.bias"), eps);
    k = moma::HeadLayerNormOp::create(b, at, k.getType(), k,
                                      param(prefix + "k_norm.weight"),
                                      param(prefix + "k_norm.bias"), eps);
  }
  auto heads = b.getI64IntegerAttr(config.nHeads);
  auto theta = b.getF64FloatAttr(config.ropeTheta);
  q = moma::RopeOp::create(b, at, q.getType(), q, tokens.positions, heads,
                           theta);
  k = moma::RopeOp::create(b, at, k.getType(), k, tokens.positions, heads,
                           theta);
  auto scale = b.getF64FloatAttr(1.0 / std::sqrt(double(config.headDim())));
  if (decode) {
    // Write this layer's keys and values of the tokens it sees into their
    // rows (sequence * seq_len + position), then attend over the cache.
    int64_t layerIndex = int64_t(updatedCaches.size());
    auto [keyCache, valueCache, valid] = caches[layerIndex];
    auto indexType = cast<RankedTensorType>(tokens.positions.getType());
    Value context = arith::ConstantOp::create(
        b, at, DenseElementsAttr::get(RankedTensorType::get({}, i32),
                                      int32_t(config.seqLen)));
    SmallVector<Value> dynamic;
    if (indexType.isDynamicDim(0))
      dynamic.push_back(tensor::DimOp::create(b, at, tokens.positions, 0));
    Value contextRows = tensor::SplatOp::create(
        b, at, tensor::ExtractOp::create(b, at, context, ValueRange{}),
        indexType, dynamic);
    Value rows = arith::AddIOp::create(
        b, at, arith::MulIOp::create(b, at, tokens.sequenceIds, contextRows),
        tokens.positions);
    keyCache = moma::ScatterAddTokensOp::create(b, at, keyCache.getType(), k,
                                                keyCache, rows, Value());
    valueCache = moma::ScatterAddTokensOp::create(
        b, at, valueCache.getType(), v, valueCache, rows, Value());
    Value ones = tensor::SplatOp::create(
        b, at,
        arith::ConstantOp::create(b, at, b.getF32FloatAttr(1.0f)),
        rowsLike(k, 1), dynamic);
    valid = moma::ScatterAddTokensOp::create(b, at, valid.getType(), ones,
                                             valid, rows, Value());
    updatedCaches.push_back({keyCache, valueCache, valid});
    Value flatValid = tensor::CollapseShapeOp::create(
        b, at, tensor({config.train.batchSize * config.seqLen}, f32), valid,
        SmallVector<ReassociationIndices>{{0, 1}});
    Value o = moma::CachedAttentionOp::create(
        b, at, q.getType(), q, keyCache, valueCache, flatValid,
        tokens.positions, tokens.sequenceIds, heads, scale,
        b.getI64IntegerAttr(config.seqLen));
    return linear(at, o, prefix + "wo.weight");
  }
  Value o =
      moma::AttentionOp::create(b, at, q.getType(), q, k, v, tokens.positions,
                                tokens.sequenceIds, heads, scale);
  return linear(at, o, prefix + "wo.weight");
}

Value ForwardBuilder::momaModule(const std::string &layer, int64_t l,
                                 const TokenSet &tokens, Value v) {
  const MoeConfig &moe = *config.moe;
  Location at = loc(layer + "moe");
  SmallVector<StringRef> names;
  SmallVector<std::vector<TokenRange>> ranges;
  for (const ExpertGroup &group : moe.groups) {
    names.push_back(group.name);
    ranges.push_back(config.groupRanges(group));
  }
  // Padded groups: each list as long as the tokens (n), the padding n
  // marking rows that gather zeros and scatter nowhere; each count stays
  // in a tensor that expert choice and the aux objective read.
  const bool padded = tokens.padGroups;
  int64_t listLength =
      padded ? cast<RankedTensorType>(tokens.ids.getType()).getDimSize(0)
             : ShapedType::kDynamic;
  SmallVector<Type> indexTypes(moe.groups.size(), tensor({listLength}, i32));
  ValueRange lists;
  Value counts;
  if (padded) {
    auto partition = moma::PaddedModalityPartitionOp::create(
        b, at, indexTypes,
        tensor({int64_t(moe.groups.size())}, i32), tokens.ids,
        b.getStrArrayAttr(names), rangeLists(b, ranges));
    lists = partition.getIndices();
    counts = partition.getCounts();
  } else {
    lists = moma::ModalityPartitionOp::create(b, at, indexTypes, tokens.ids,
                                              b.getStrArrayAttr(names),
                                              rangeLists(b, ranges))
                .getIndices();
  }

  Value combined = zerosLike(at, v);
  for (auto [g, group] : llvm::enumerate(moe.groups)) {
    std::string prefix = layer + "moe." + group.name + ".";
    Location groupAt = loc(layer + "moe." + group.name);
    Value rows = lists[g];
    Value count;
    if (padded)
      count = tensor::ExtractSliceOp::create(
          b, groupAt, tensor({1}, i32), counts,
          ArrayRef<OpFoldResult>{b.getIndexAttr(int64_t(g))},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1)},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    Value groupInput = gather(groupAt, v, rows, padded);
    const int64_t experts = group.experts;

    if (experts == 1) {
      // One expert takes every token of its group: no router, no gate.
      SmallVector<ReassociationIndices> dropExpertDim = {{0, 1}, {2}};
      auto squeeze = [&](const std::string &name) -> Value {
        auto type = cast<RankedTensorType>(param(name).getType());
        return tensor::CollapseShapeOp::create(
            b, groupAt, tensor(type.getShape().drop_front(), f32), param(name),
            dropExpertDim);
      };
      // Named, so the ops come out in w1, w3, w2 order.
      Value w1 = squeeze(prefix + "w1");
      Value w3 = squeeze(prefix + "w3");
      Value w2 = squeeze(prefix + "w2");
      Value out = moma::SwiGLUOp::create(b, groupAt, groupInput.getType(),
                                         groupInput, w1, w3, w2);
      combined = moma::ScatterAddTokensOp::create(
          b, groupAt, combined.getType(), out, combined, rows, Value(), padded);
      continue;
    }

    Value scores = moma::RouterOp::create(
        b, groupAt, rowsLike(groupInput, experts), groupInput,
        param(prefix + "router.weight"),
        gumbelNoise ? routerNoise(groupAt, l, v, rows, experts, padded)
                    : Value());
    // The batch choice: what training routes by and what causal evaluation
    // compares the aux routers with. A decoding step has no batch to
    // choose over.
    moma::ExpertChoiceOp choice;
    if (!decode)
      choice = moma::ExpertChoiceOp::create(
          b, groupAt, tensor({experts, ShapedType::kDynamic}, i32),
          tensor({experts, ShapedType::kDynamic}, f32), scores, count,
          b.getF64FloatAttr(moe.capacityFactor));
    Value predicted;
    if (config.auxRouters)
      predicted = moma::AuxRouterOp::create(
          b, groupAt, rowsLike(groupInput, experts), groupInput,
          param(prefix + "aux_router.w1.weight"),
          param(prefix + "aux_router.w2.weight"));
    Value chosenRows, gates;
    if (causal) {
      auto route = moma::CausalRouteOp::create(
          b, groupAt, tensor({experts, ShapedType::kDynamic}, i32),
          tensor({experts, ShapedType::kDynamic}, f32), scores, predicted);
      chosenRows = route.getIndices();
      gates = route.getGates();
      if (!decode)
        routerResults.push_back(
            {"disagreement." + prefix.substr(0, prefix.size() - 1),
             moma::RoutingDisagreementOp::create(b, groupAt, scalar(),
                                                 predicted,
                                                 choice.getIndices())});
    } else {
      chosenRows = choice.getIndices();
      gates = choice.getGates();
    }
    Value expertInput = gather(groupAt, groupInput, chosenRows, padded);
    Value expertOutput = moma::SwiGLUOp::create(
        b, groupAt, expertInput.getType(), expertInput, param(prefix + "w1"),
        param(prefix + "w3"), param(prefix + "w2"));
    // Expert e's j-th token is row rows[indices[e, j]] of the module input.
    Value moduleRows = gather(groupAt, rows, chosenRows);
    combined = moma::ScatterAddTokensOp::create(b, groupAt, combined.getType(),
                                                expertOutput, combined,
                                                moduleRows, gates, padded);
    if (config.auxRouters && !causal)
      addAuxObjective(groupAt, prefix.substr(0, prefix.size() - 1), predicted,
                      choice.getIndices(), count);
  }
  return combined;
}

Value ForwardBuilder::feedForward(const std::string &layer, int64_t l,
                                  const TokenSet &tokens, Value v) {
  if (config.isMoeLayer(l))
    return momaModule(layer, l, tokens, v);
  std::string prefix = layer + "feed_forward.";
  return moma::SwiGLUOp::create(b, loc(layer + "feed_forward"), v.getType(), v,
                                param(prefix + "w1.weight"),
                                param(prefix + "w3.weight"),
                                param(prefix + "w2.weight"));
}

Value ForwardBuilder::block(const std::string &layer, int64_t l,
                            const TokenSet &tokens) {
  Value x = tokens.hidden;
  Location at = loc(layer + "residual");
  if (config.norm == NormOrder::Swin) {
    // Chameleon's res-post-norm: normalize each sub-layer's output.
    Value a = add(at, x,
                  rmsNorm(at, attention(layer, tokens, x),
                          layer + "attention_norm.weight"));
    return add(at, a,
               rmsNorm(at, feedForward(layer, l, tokens, a),
                       layer + "ffn_norm.weight"));
  }
  Value a = add(at, x,
                attention(layer, tokens,
                          rmsNorm(at, x, layer + "attention_norm.weight")));
  return add(
      at, a,
      feedForward(layer, l, tokens, rmsNorm(at, a, layer + "ffn_norm.weight")));
}

Value ForwardBuilder::modLayer(const std::string &layer, int64_t l,
                               const TokenSet &tokens) {
  Location at = loc(layer + "mod");
  Value x = tokens.hidden;
  // MoD routers never get noise (MODEL_SPEC section 4).
  Value scores = moma::RouterOp::create(b, at, rowsLike(x, 1), x,
                                        param(layer + "mod.router.weight"),
                                        /*noise=*/Value());
  // MoD layers see the whole micro-batch: k_d = ceil(c_d N), static when
  // N is.
  int64_t rowsIn = cast<RankedTensorType>(x.getType()).getDimSize(0);
  int64_t kept =
      ShapedType::isDynamic(rowsIn)
          ? ShapedType::kDynamic
          : int64_t(std::ceil(config.mod->capacity * double(rowsIn)));
  // The batch choice, as in the MoMa module: none when decoding.
  moma::ModSelectOp select;
  Value rows, gates;
  if (!decode) {
    select = moma::ModSelectOp::create(
        b, at, tensor({kept}, i32), tensor({kept}, f32), scores,
        b.getF64FloatAttr(config.mod->capacity));
    rows = select.getIndices();
    gates = select.getGates();
  }
  Value predicted;
  if (config.auxRouters)
    predicted = moma::AuxRouterOp::create(
        b, at, rowsLike(x, 1), x, param(layer + "mod.aux_router.w1.weight"),
        param(layer + "mod.aux_router.w2.weight"));
  if (causal) {
    // The tokens the auxiliary router passes, ascending, as [1, k] rows.
    auto route = moma::CausalRouteOp::create(
        b, at, tensor({1, ShapedType::kDynamic}, i32),
        tensor({1, ShapedType::kDynamic}, f32), scores, predicted);
    SmallVector<ReassociationIndices> flatten = {{0, 1}};
    rows = tensor::CollapseShapeOp::create(
        b, at, tensor({ShapedType::kDynamic}, i32), route.getIndices(), flatten);
    gates = tensor::CollapseShapeOp::create(
        b, at, tensor({ShapedType::kDynamic}, f32), route.getGates(), flatten);
    if (!decode)
      routerResults.push_back(
          {"disagreement." + layer + "mod",
           moma::RoutingDisagreementOp::create(b, at, scalar(), predicted,
                                               select.getIndices())});
  }
  // Causal routing sizes its token lists by the aux routers' decisions,
  // so only batch routing pads.
  TokenSet selected{gather(at, x, rows), gather(at, tokens.ids, rows),
                    gather(at, tokens.positions, rows),
                    gather(at, tokens.sequenceIds, rows),
                    /*padGroups=*/padModGroups && !causal};
  if (config.auxRouters && !causal)
    addAuxObjective(at, layer + "mod", predicted, rows);
  Value processed = block(layer, l, selected);
  return moma::ModMergeOp::create(b, at, x.getType(), x, processed, rows,
                                  gates);
}

OwningOpRef<ModuleOp> ForwardBuilder::buildDecodeStep() {
  const int64_t sequences = config.train.batchSize, seq = config.seqLen;
  const int64_t rows = sequences * seq, d = config.dModel;
  // @decode_step: one token per sequence; @prefill: up to every row.
  const int64_t tokenBound = prefill ? rows : sequences;
  OwningOpRef<ModuleOp> module = newModule();
  Location moduleLoc = module->getLoc();

  std::vector<ParameterSpec> specs = listParameters(config);
  SmallVector<Type> argTypes = {tensor({tokenBound}, i32),
                                tensor({tokenBound}, i32)};
  SmallVector<std::string> argNames = {"tokens", "positions"};
  if (prefill) {
    argTypes.append({tensor({tokenBound}, i32), tensor({sequences}, i32)});
    argNames.append({"sequence_ids", "last_rows"});
  }
  const unsigned firstParam = argTypes.size();
  for (const ParameterSpec &spec : specs) {
    argTypes.push_back(tensor(spec.shape, f32));
    argNames.push_back(spec.name);
  }
  SmallVector<Type> cacheTypes = {tensor({rows, d}, f32), tensor({rows, d}, f32),
                                  tensor({rows, 1}, f32)};
  SmallVector<std::string> cacheNames;
  const char *cacheParts[] = {"key", "value", "valid"};
  for (int64_t l = 0; l < config.nLayers; ++l)
    for (int part = 0; part < 3; ++part) {
      cacheNames.push_back("cache.layers." + std::to_string(l) + "." +
                           cacheParts[part]);
      argNames.push_back(cacheNames.back());
      argTypes.push_back(cacheTypes[part]);
    }
  if (prefill) {
    argTypes.push_back(tensor({}, i32));
    argNames.push_back(kPrefillRowsName.str());
  }
  auto func = func::FuncOp::create(
      b, moduleLoc, prefill ? kPrefillFunctionName : kDecodeFunctionName,
      b.getFunctionType(argTypes, {}));
  for (auto [i, name] : llvm::enumerate(argNames))
    func.setArgAttr(i, kParamAttrName, b.getStringAttr(name));
  if (prefill)
    func.setArgAttr(argTypes.size() - 1, moma::kHostScalarAttrName,
                    b.getUnitAttr());
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  for (auto [i, spec] : llvm::enumerate(specs))
    params[spec.name] = entry->getArgument(firstParam + i);
  for (int64_t l = 0; l < config.nLayers; ++l) {
    unsigned first = firstParam + specs.size() + 3 * l;
    caches.push_back({entry->getArgument(first), entry->getArgument(first + 1),
                      entry->getArgument(first + 2)});
  }

  Location inputAt = loc("inputs");
  Value ids = entry->getArgument(0), positions = entry->getArgument(1);
  Value sequenceIds;
  if (prefill) {
    // The first prefill_rows entries are the prompt tokens.
    Value count = arith::IndexCastOp::create(
        b, inputAt, b.getIndexType(),
        tensor::ExtractOp::create(b, inputAt, entry->getArguments().back(),
                                  ValueRange{}));
    auto firstTokens = [&](Value all) -> Value {
      return tensor::ExtractSliceOp::create(
          b, inputAt, tensor({ShapedType::kDynamic}, i32), all,
          ArrayRef<OpFoldResult>{b.getIndexAttr(0)},
          ArrayRef<OpFoldResult>{count},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    };
    ids = firstTokens(ids);
    positions = firstTokens(positions);
    sequenceIds = firstTokens(entry->getArgument(2));
  } else {
    SmallVector<int32_t> slots;
    for (int64_t s = 0; s < sequences; ++s)
      slots.push_back(int32_t(s));
    sequenceIds = arith::ConstantOp::create(
        b, inputAt,
        DenseElementsAttr::get(tensor({sequences}, i32), ArrayRef(slots)));
  }
  const int64_t tokens = prefill ? ShapedType::kDynamic : sequences;
  Value hidden = moma::EmbedOp::create(b, loc("tok_embeddings"),
                                       tensor({tokens, d}, f32),
                                       param("tok_embeddings.weight"), ids);
  for (int64_t l = 0; l < config.nLayers; ++l) {
    std::string layer = "layers." + std::to_string(l) + ".";
    TokenSet all{hidden, ids, positions, sequenceIds};
    hidden =
        config.isModLayer(l) ? modLayer(layer, l, all) : block(layer, l, all);
  }
  Location outputAt = loc("output");
  // The prefill's logits are those of each sequence's last prompt token.
  if (prefill)
    hidden = gather(outputAt, hidden, entry->getArgument(3));
  Value logits = linear(outputAt, rmsNorm(outputAt, hidden, "norm.weight"),
                        "output.weight");
  SmallVector<Value> results = {logits};
  SmallVector<std::string> resultNames = {"logits"};
  for (auto [l, updated] : llvm::enumerate(updatedCaches))
    for (auto [part, value] : llvm::enumerate(updated)) {
      results.push_back(value);
      resultNames.push_back(cacheNames[3 * l + part]);
    }
  returnResults(func, outputAt, results, resultNames);
  return module;
}

OwningOpRef<ModuleOp> ForwardBuilder::build(bool dynamicBatch) {
  if (decode)
    return buildDecodeStep();
  const int64_t batch = config.train.batchSize, seq = config.seqLen;
  // The compiled bound of the token count, and the token dimension.
  const int64_t maxTokens = batch * seq;
  const int64_t tokens = dynamicBatch ? ShapedType::kDynamic : maxTokens;
  OwningOpRef<ModuleOp> module = newModule();
  Location moduleLoc = module->getLoc();

  std::vector<ParameterSpec> specs = listParameters(config);
  SmallVector<Type> argTypes = {tensor({batch, seq + 1}, i32)};
  for (const ParameterSpec &spec : specs)
    argTypes.push_back(tensor(spec.shape, f32));

  // With moe.gumbel, the routers of groups with several experts add noise
  // that the caller draws (training) or sets to zero (evaluation).
  int64_t maxExperts = 0;
  if (config.moe && config.moe->gumbel && !causal && !auxTraining)
    for (const ExpertGroup &group : config.moe->groups)
      if (group.experts > 1)
        maxExperts = std::max(maxExperts, group.experts);
  if (maxExperts > 0)
    argTypes.push_back(tensor({config.nLayers, maxTokens, maxExperts}, f32));
  if (dynamicBatch)
    argTypes.push_back(tensor({}, i32));

  // The results are known once the body is built (returnResults).
  auto func = func::FuncOp::create(
      b, moduleLoc,
      causal        ? kCausalForwardFunctionName
      : auxTraining ? kAuxForwardFunctionName
                    : kForwardFunctionName,
      b.getFunctionType(argTypes, {}));
  func.setArgAttr(0, kParamAttrName, b.getStringAttr("tokens"));
  for (auto [i, spec] : llvm::enumerate(specs)) {
    func.setArgAttr(i + 1, kParamAttrName, b.getStringAttr(spec.name));
    // Training the auxiliary routers freezes everything else.
    if (auxTraining && !spec.auxRouter)
      func.setArgAttr(i + 1, moma::kNoGradAttrName, b.getUnitAttr());
  }
  if (maxExperts > 0) {
    unsigned noise = specs.size() + 1;
    func.setArgAttr(noise, kParamAttrName, b.getStringAttr("gumbel_noise"));
    func.setArgAttr(noise, moma::kNoGradAttrName, b.getUnitAttr());
  }
  if (dynamicBatch) {
    unsigned rows = argTypes.size() - 1;
    func.setArgAttr(rows, kParamAttrName, b.getStringAttr(kBatchRowsName));
    func.setArgAttr(rows, moma::kNoGradAttrName, b.getUnitAttr());
    func.setArgAttr(rows, moma::kHostScalarAttrName, b.getUnitAttr());
  }

  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  for (auto [i, spec] : llvm::enumerate(specs))
    params[spec.name] = entry->getArgument(i + 1);
  if (maxExperts > 0)
    gumbelNoise = entry->getArgument(specs.size() + 1);

  Location inputAt = loc("inputs");
  Value tokenRows = entry->getArgument(0);
  Value tokenCount;
  if (dynamicBatch) {
    // The first batch_rows rows of the tokens buffer are the micro-batch.
    Value rows = arith::IndexCastOp::create(
        b, inputAt, b.getIndexType(),
        tensor::ExtractOp::create(b, inputAt, entry->getArguments().back(),
                                  ValueRange{}));
    tokenRows = tensor::ExtractSliceOp::create(
        b, inputAt, tensor({ShapedType::kDynamic, seq + 1}, i32), tokenRows,
        ArrayRef<OpFoldResult>{b.getIndexAttr(0), b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{rows, b.getIndexAttr(seq + 1)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
    tokenCount = arith::MulIOp::create(
        b, inputAt, rows, arith::ConstantIndexOp::create(b, inputAt, seq));
  }
  auto shift =
      moma::ShiftTokensOp::create(b, inputAt, tensor({tokens}, i32),
                                  tensor({tokens}, i32), tokenRows);
  // Positions and sequence ids of the first N flat tokens are those of the
  // compiled bound's first N.
  auto layout = moma::TokenPositionsOp::create(
      b, inputAt, tensor({maxTokens}, i32), tensor({maxTokens}, i32),
      b.getI64IntegerAttr(seq));
  Value positions = layout.getPositions(), sequenceIds = layout.getSequenceIds();
  if (dynamicBatch) {
    auto firstTokens = [&](Value all) -> Value {
      return tensor::ExtractSliceOp::create(
          b, inputAt, tensor({ShapedType::kDynamic}, i32), all,
          ArrayRef<OpFoldResult>{b.getIndexAttr(0)},
          ArrayRef<OpFoldResult>{tokenCount},
          ArrayRef<OpFoldResult>{b.getIndexAttr(1)});
    };
    positions = firstTokens(positions);
    sequenceIds = firstTokens(sequenceIds);
  }
  Value hidden = moma::EmbedOp::create(
      b, loc("tok_embeddings"), tensor({tokens, config.dModel}, f32),
      param("tok_embeddings.weight"), shift.getInputs());

  for (int64_t l = 0; l < config.nLayers; ++l) {
    std::string layer = "layers." + std::to_string(l) + ".";
    TokenSet all{hidden, shift.getInputs(), positions, sequenceIds};
    hidden =
        config.isModLayer(l) ? modLayer(layer, l, all) : block(layer, l, all);
  }

  Location outputAt = loc("output");
  Value logits = linear(outputAt, rmsNorm(outputAt, hidden, "norm.weight"),
                        "output.weight");
  SmallVector<StringRef> modalityNames;
  SmallVector<std::vector<TokenRange>> modalityRanges;
  for (const Modality &modality : config.modalities) {
    modalityNames.push_back(modality.name);
    modalityRanges.push_back(modality.ranges);
  }
  auto loss = moma::CrossEntropyOp::create(
      b, outputAt, scalar(),
      SmallVector<Type>(config.modalities.size(), scalar()), logits,
      shift.getTargets(), b.getF64FloatAttr(config.zLoss),
      b.getStrArrayAttr(modalityNames), rangeLists(b, modalityRanges));

  SmallVector<Value> results = {loss.getLoss()};
  llvm::append_range(results, loss.getModalityLosses());
  SmallVector<std::string> resultNames = {"loss"};
  for (const Modality &modality : config.modalities)
    resultNames.push_back("loss." + modality.name);
  bool hasAuxRouters = llvm::any_of(
      specs, [](const ParameterSpec &spec) { return spec.auxRouter; });
  if (hasAuxRouters && !causal) {
    results.push_back(auxLoss);
    resultNames.push_back("aux_loss");
  }
  if (auxTraining) {
    // The objective first (what the gradient is of); the model's loss is
    // dead code, removed by the lowering.
    results = {auxLoss};
    resultNames = {"aux_loss"};
  }
  for (auto &[name, value] : routerResults) {
    resultNames.push_back(name);
    results.push_back(value);
  }
  returnResults(func, outputAt, results, resultNames);
  return module;
}

} // namespace

void momac::loadFrontendDialects(MLIRContext &context) {
  context.loadDialect<moma::MomaDialect, func::FuncDialect, arith::ArithDialect,
                      tensor::TensorDialect>();
}

OwningOpRef<ModuleOp> momac::buildForwardModule(MLIRContext &context,
                                                const ModelConfig &config,
                                                StringRef sourceName,
                                                bool dynamicBatch,
                                                ForwardKind kind,
                                                bool padModGroups) {
  loadFrontendDialects(context);
  return ForwardBuilder(context, config, sourceName, kind, padModGroups)
      .build(dynamicBatch);
}
