//===- BufferGemm.cpp - Contractions on buffers as GEMMs ------------------===//

#include "compiler/Codegen/BufferGemm.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

using namespace mlir;
using namespace momac;

namespace {

/// `v` without an `arith.extf` in front (a bf16 operand widened to f32).
Value skipExtension(Value v) {
  if (auto ext = v.getDefiningOp<arith::ExtFOp>())
    return ext.getIn();
  return v;
}

/// True when the body is `yield(c + a * b)` (either operand order), where a
/// and b may be widened from a narrower type by `arith.extf`: a
/// linalg.contract of floats, or a generic op written as one.
bool isMultiplyAccumulate(linalg::LinalgOp op) {
  Block &body = *op.getBlock();
  auto yield = dyn_cast<linalg::YieldOp>(body.getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return false;
  auto add = yield.getValues()[0].getDefiningOp<arith::AddFOp>();
  if (!add)
    return false;
  Value a = body.getArgument(0), b = body.getArgument(1),
        c = body.getArgument(2);
  Value product = add.getLhs() == c ? add.getRhs() : add.getLhs();
  if ((add.getLhs() == c) == (add.getRhs() == c))
    return false;
  auto mul = product.getDefiningOp<arith::MulFOp>();
  if (!mul)
    return false;
  Value x = skipExtension(mul.getLhs()), y = skipExtension(mul.getRhs());
  bool mulOk = (x == a && y == b) || (x == b && y == a);
  // Nothing but the extensions, the multiply and the add.
  size_t extensions = (x != mul.getLhs()) + (y != mul.getRhs());
  return mulOk && body.getOperations().size() == 3 + extensions;
}

/// The `linalg.fill` of zero into `buffer` that precedes `op` with only
/// side-effect-free ops in between, or null.
linalg::FillOp zeroFillOf(Operation *op, Value buffer) {
  Operation *previous = op->getPrevNode();
  while (previous && isMemoryEffectFree(previous))
    previous = previous->getPrevNode();
  auto fill = dyn_cast_or_null<linalg::FillOp>(previous);
  if (!fill || !fill.hasPureBufferSemantics() ||
      fill.getOutputs().front() != buffer ||
      !matchPattern(fill.getInputs().front(), m_AnyZeroFloat()))
    return nullptr;
  return fill;
}

} // namespace

int64_t GemmOperand::dimOf(unsigned loop) const {
  for (unsigned r = 0; r < map.getNumResults(); ++r)
    if (map.getDimPosition(r) == loop)
      return r;
  return -1;
}

int64_t GemmOperand::strideOf(unsigned loop) const {
  int64_t d = dimOf(loop);
  return d < 0 ? 0 : strides[d];
}

FailureOr<BufferGemm> momac::matchBufferGemm(linalg::LinalgOp op) {
  if (!op.hasPureBufferSemantics() || op.getNumDpsInputs() != 2 ||
      op.getNumDpsInits() != 1 || !linalg::isaContractionOpInterface(op) ||
      !isMultiplyAccumulate(op))
    return failure();
  // f32 C += f32 A B, or f32 C += bf16 A B with f32 accumulation.
  SmallVector<GemmOperand> operands;
  for (OpOperand &use : op->getOpOperands()) {
    auto type = dyn_cast<MemRefType>(use.get().getType());
    if (!type)
      return failure();
    Type element = type.getElementType();
    bool isOutput = op.isDpsInit(&use);
    if (!element.isF32() && (isOutput || !element.isBF16()))
      return failure();
    GemmOperand operand{use.get(), type, {}, op.getMatchingIndexingMap(&use)};
    int64_t offset;
    if (failed(type.getStridesAndOffset(operand.strides, offset)) ||
        !operand.map.isProjectedPermutation())
      return failure();
    operands.push_back(operand);
  }
  BufferGemm gemm;
  gemm.op = op;
  gemm.a = operands[0];
  gemm.b = operands[1];
  gemm.c = operands[2];
  const GemmOperand &a = gemm.a, &b = gemm.b, &c = gemm.c;
  Type operandType = a.type.getElementType();
  if (b.type.getElementType() != operandType)
    return failure();
  gemm.bf16 = operandType.isBF16();

  // The loops, read from the op: batch (in A, B and C), M (A and C), N (B
  // and C), K (A and B, reduced). A BLAS GEMM has one of each of M, N, K.
  FailureOr<linalg::ContractionDimensions> dims =
      linalg::inferContractionDims(op);
  if (failed(dims) || dims->m.size() != 1 || dims->n.size() != 1 ||
      dims->k.size() != 1)
    return failure();
  gemm.batchLoops.assign(dims->batch.begin(), dims->batch.end());
  gemm.m = dims->m.front();
  gemm.n = dims->n.front();
  gemm.k = dims->k.front();
  unsigned m = gemm.m, n = gemm.n, k = gemm.k;
  // Row-major C, and one unit stride in each of A and B. The unit strides
  // must be known statically; leading dimensions and batch strides may be
  // dynamic (read from the buffers' metadata).
  if (c.strideOf(n) != 1)
    return failure();
  gemm.ldcLoop = m;
  if (a.strideOf(k) == 1) {
    gemm.transA = false;
    gemm.ldaLoop = m;
  } else if (a.strideOf(m) == 1) {
    gemm.transA = true;
    gemm.ldaLoop = k;
  } else {
    return failure();
  }
  if (b.strideOf(n) == 1) {
    gemm.transB = false;
    gemm.ldbLoop = k;
  } else if (b.strideOf(k) == 1) {
    gemm.transB = true;
    gemm.ldbLoop = n;
  } else {
    return failure();
  }
  gemm.zeroFill = zeroFillOf(op, c.buffer);
  return gemm;
}

GemmAddressing::GemmAddressing(OpBuilder &builder, const BufferGemm &gemm)
    : builder(builder), gemm(gemm), loc(gemm.op->getLoc()) {
  auto view = [&](const GemmOperand &x) {
    return View{
        memref::ExtractAlignedPointerAsIndexOp::create(builder, loc, x.buffer),
        memref::ExtractStridedMetadataOp::create(builder, loc, x.buffer)};
  };
  viewA = view(gemm.a);
  viewB = view(gemm.b);
  viewC = view(gemm.c);
}

const GemmAddressing::View &
GemmAddressing::viewOf(const GemmOperand &operand) const {
  if (&operand == &gemm.a)
    return viewA;
  if (&operand == &gemm.b)
    return viewB;
  return viewC;
}

Value GemmAddressing::sizeOf(unsigned loop) {
  for (const GemmOperand *x : {&gemm.a, &gemm.b, &gemm.c})
    if (int64_t d = x->dimOf(loop); d >= 0)
      return memref::DimOp::create(builder, loc, x->buffer, d);
  return Value();
}

Value GemmAddressing::strideOf(const GemmOperand &operand,
                               unsigned loop) const {
  return viewOf(operand).metadata.getStrides()[operand.dimOf(loop)];
}

Value GemmAddressing::lda() {
  Value rowLength = sizeOf(gemm.transA ? gemm.m : gemm.k);
  return arith::MaxSIOp::create(builder, loc, strideOf(gemm.a, gemm.ldaLoop),
                                rowLength);
}

Value GemmAddressing::ldb() {
  Value rowLength = sizeOf(gemm.transB ? gemm.k : gemm.n);
  return arith::MaxSIOp::create(builder, loc, strideOf(gemm.b, gemm.ldbLoop),
                                rowLength);
}

Value GemmAddressing::ldc() {
  return arith::MaxSIOp::create(builder, loc, strideOf(gemm.c, gemm.ldcLoop),
                                sizeOf(gemm.n));
}

Value GemmAddressing::pointer(
    OpBuilder &b, const GemmOperand &operand, ValueRange batchIndices,
    ArrayRef<std::pair<unsigned, Value>> starts) const {
  const View &view = viewOf(operand);
  Value elements = view.metadata.getOffset();
  auto advance = [&](unsigned loop, Value index) {
    elements = arith::AddIOp::create(
        b, loc, elements,
        arith::MulIOp::create(b, loc, index, strideOf(operand, loop)));
  };
  for (auto [loop, index] : llvm::zip(gemm.batchLoops, batchIndices))
    advance(loop, index);
  for (auto [loop, index] : starts)
    advance(loop, index);
  Value bytes = arith::MulIOp::create(
      b, loc, elements,
      arith::ConstantIndexOp::create(
          b, loc, operand.type.getElementType().getIntOrFloatBitWidth() / 8));
  Value address = arith::AddIOp::create(b, loc, view.aligned, bytes);
  Value asInt = arith::IndexCastOp::create(b, loc, b.getI64Type(), address);
  return LLVM::IntToPtrOp::create(b, loc,
                                  LLVM::LLVMPointerType::get(b.getContext()),
                                  asInt)
      .getResult();
}
