//===- EntryPoints.cpp - The calling convention of compiled steps ---------===//

#include "compiler/Target/Common/EntryPoints.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace momac;

static FailureOr<BufferSpec> describeBuffer(Operation *op, Type type,
                                            StringAttr name, unsigned index,
                                            StringRef what) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return op->emitError() << what << " #" << index
                           << " needs a static tensor type, got " << type;
  if (!name)
    return op->emitError() << what << " #" << index << " has no name";
  BufferSpec spec;
  spec.name = name.str();
  Type element = tensor.getElementType();
  if (element.isF32())
    spec.dtype = "F32";
  else if (element.isInteger(32))
    spec.dtype = "I32";
  else
    return op->emitError() << what << " #" << index
                           << " has an unsupported element type " << element;
  spec.shape.assign(tensor.getShape().begin(), tensor.getShape().end());
  return spec;
}

FailureOr<EntryPointSpec> momac::describeEntryPoint(func::FuncOp func) {
  EntryPointSpec entry;
  entry.name = func.getName().str();
  entry.symbol = "momac_" + entry.name;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    if (func.getArgAttr(i, moma::kShardUnitAttrName))
      continue;
    auto name = func.getArgAttrOfType<StringAttr>(i, moma::kParamAttrName);
    FailureOr<BufferSpec> spec = describeBuffer(
        func, func.getArgument(i).getType(), name, i, "argument");
    if (failed(spec))
      return failure();
    spec->onHost = bool(func.getArgAttr(i, moma::kHostScalarAttrName));
    entry.arguments.push_back(*spec);
  }
  for (unsigned i = 0; i < func.getNumResults(); ++i) {
    if (func.getResultAttr(i, moma::kShardUnitAttrName))
      continue;
    auto name = func.getResultAttrOfType<StringAttr>(i, moma::kResultAttrName);
    FailureOr<BufferSpec> spec = describeBuffer(
        func, func.getFunctionType().getResult(i), name, i, "result");
    if (failed(spec))
      return failure();
    spec->inPlace = bool(func.getResultAttr(i, moma::kInPlaceAttrName));
    entry.results.push_back(*spec);
  }
  return entry;
}

std::vector<ManifestShardUnit> momac::describeShardUnits(ModuleOp module) {
  std::vector<ManifestShardUnit> units;
  for (auto func : module.getOps<func::FuncOp>()) {
    auto names = func->getAttrOfType<ArrayAttr>(moma::kShardUnitsAttrName);
    auto elements = func->getAttrOfType<DenseI64ArrayAttr>(
        moma::kShardUnitElementsAttrName);
    if (!names || !elements)
      continue;
    for (auto [name, size] : llvm::zip(names, elements.asArrayRef()))
      units.push_back({cast<StringAttr>(name).str(), size, {}, {}});
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      auto unit = func.getArgAttrOfType<IntegerAttr>(i, moma::kShardUnitAttrName);
      auto offset =
          func.getArgAttrOfType<IntegerAttr>(i, moma::kShardOffsetAttrName);
      auto name = func.getArgAttrOfType<StringAttr>(i, moma::kParamAttrName);
      if (!unit || !offset || !name)
        continue;
      ManifestShardUnit &target = units[unit.getInt()];
      target.parameters.push_back(name.str());
      target.offsets.push_back(offset.getInt());
    }
    break;
  }
  return units;
}

LogicalResult momac::resultsToOutParams(func::FuncOp func) {
  if (!func.getBody().hasOneBlock())
    return func.emitError() << "expects a single-block function";
  Block &body = func.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  OpBuilder b(ret);
  SmallVector<Type> outTypes;
  for (Type type : func.getFunctionType().getResults()) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor || !tensor.hasStaticShape())
      return func.emitError() << "expects static tensor results, got " << type;
    outTypes.push_back(
        MemRefType::get(tensor.getShape(), tensor.getElementType()));
  }
  unsigned firstOut = func.getNumArguments();
  // The out-parameters keep the results' attributes (moma.result, and the
  // FSDP placement of gradients).
  SmallVector<DictionaryAttr> resultAttrs;
  for (unsigned i = 0; i < func.getNumResults(); ++i)
    resultAttrs.push_back(func.getResultAttrDict(i));
  // All at once: inserting one argument copies the attribute list of all.
  SmallVector<unsigned> positions(outTypes.size(), firstOut);
  SmallVector<Location> locations(outTypes.size(), func.getLoc());
  if (failed(func.insertArguments(positions, outTypes, resultAttrs, locations)))
    return failure();
  for (auto [i, value] : llvm::enumerate(ret.getOperands()))
    bufferization::MaterializeInDestinationOp::create(
        b, ret.getLoc(), TypeRange{}, value, body.getArgument(firstOut + i),
        /*restrict=*/true, /*writable=*/true);
  func::ReturnOp::create(b, ret.getLoc());
  ret.erase();
  // momarun passes each buffer as a bare pointer (addPackedEntryPoint); the
  // functions the entry points call pass memrefs with their sizes.
  func->setAttr("llvm.bareptr",
                UnitAttr::get(func.getContext()));
  BitVector allResults(func.getNumResults(), true);
  return func.eraseResults(allResults);
}

LogicalResult momac::addPackedEntryPoint(ModuleOp module, StringRef name) {
  auto callee = module.lookupSymbol<LLVM::LLVMFuncOp>(name);
  if (!callee)
    return module.emitError() << "no lowered function @" << name;
  auto ptr = LLVM::LLVMPointerType::get(module.getContext());
  for (Type type : callee.getFunctionType().getParams())
    if (type != ptr)
      return callee.emitError()
             << "expects every argument lowered to a bare pointer, got "
             << type;
  OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
  Location loc = callee.getLoc();
  auto wrapperType =
      LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(b.getContext()), ptr);
  auto wrapper =
      LLVM::LLVMFuncOp::create(b, loc, ("momac_" + name).str(), wrapperType);
  Block *entry = wrapper.addEntryBlock(b);
  b.setInsertionPointToStart(entry);
  SmallVector<Value> operands;
  for (unsigned i = 0; i < callee.getNumArguments(); ++i) {
    Value slot = LLVM::GEPOp::create(b, loc, ptr, ptr, entry->getArgument(0),
                                     ArrayRef<LLVM::GEPArg>{int32_t(i)});
    operands.push_back(LLVM::LoadOp::create(b, loc, ptr, slot));
  }
  LLVM::CallOp::create(b, loc, callee, operands);
  LLVM::ReturnOp::create(b, loc, ValueRange{});
  return success();
}
