//===- MapHostCodeToGpu.cpp - What runs between the tiles, on the GPU -----===//
//
// See Passes.td. After the tile mapping and the cuBLAS calls, a step's host
// code still touches memory in three ways: kernels the shared pipeline left
// whole (zero fills, scalar sums, a copy), scalar code (token counts, a
// loss divided by its count, the combine loop of a group's experts), and
// allocations. All of that memory is the GPU's, so each becomes device work;
// only values the host needs to size later work (a token count that sizes a
// buffer or a grid) come back, in one read per stretch of scalar code.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"
#include "compiler/Target/CUDA/ThreadDistribution.h"
#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

namespace momac {
#define GEN_PASS_DEF_MAPHOSTCODETOGPU
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// void momart_cuda_read_to_host(void *host, const void *device, i64 bytes):
/// copies after the work queued so far, and waits for it
/// (runtime/device/cuda/CudaRuntime.h).
constexpr llvm::StringLiteral kReadToHost = "momart_cuda_read_to_host";

Value indexConstant(OpBuilder &b, Location loc, int64_t value) {
  return arith::ConstantIndexOp::create(b, loc, value);
}

bool isInsideLaunch(Operation *op) {
  return op->getParentOfType<gpu::LaunchOp>() != nullptr;
}

/// A load of an argument the caller passes in host memory (batch_rows,
/// `moma.host_scalar`).
bool readsHostScalar(Operation &op) {
  auto load = dyn_cast<memref::LoadOp>(op);
  auto arg = load ? dyn_cast<BlockArgument>(load.getMemRef()) : nullptr;
  auto func =
      arg ? dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp()) : nullptr;
  return func && arg.getOwner()->isEntryBlock() &&
         func.getArgAttr(arg.getArgNumber(), mlir::moma::kHostScalarAttrName);
}

/// Host-side ops that stay on the host: launches and library calls,
/// allocation, buffer metadata (views, sizes, pointers), reads of host
/// scalars and what has no memory effect at all.
bool staysOnHost(Operation &op) {
  if (readsHostScalar(op))
    return true;
  if (isa<gpu::LaunchOp, func::CallOp, func::ReturnOp, memref::AllocOp,
          memref::DeallocOp, memref::AllocaOp, memref::DimOp,
          memref::ExtractStridedMetadataOp,
          memref::ExtractAlignedPointerAsIndexOp, ViewLikeOpInterface>(op))
    return true;
  if (op.getDialect() && op.getDialect()->getNamespace() == "gpu")
    return true;
  return false;
}

/// True when `op` (with regions) holds work that must stay on the host, so
/// that it is a host loop or branch whose body is mapped in place.
bool holdsHostWork(Operation &op) {
  bool found = false;
  op.walk([&](Operation *inner) {
    if (inner != &op && isa<gpu::LaunchOp, func::CallOp, memref::AllocOp,
                            memref::DeallocOp>(inner))
      found = true;
  });
  return found;
}

/// True when an operand of `op` is a result of one of `ops` (ops of its
/// block) or of an op nested in one of them.
bool usesResultOf(Operation *op,
                  const llvm::SmallPtrSetImpl<Operation *> &ops) {
  return llvm::any_of(op->getOperands(), [&](Value v) {
    Operation *def = v.getDefiningOp();
    Operation *owner =
        def ? op->getBlock()->findAncestorOpInBlock(*def) : nullptr;
    return owner && ops.contains(owner);
  });
}

/// Scalar code that touches device memory: loads, stores, and loops or
/// branches of them.
bool isDeviceScalarCode(Operation &op) {
  if (staysOnHost(op))
    return false;
  if (op.getNumRegions() > 0)
    return !holdsHostWork(op) && !isMemoryEffectFree(&op);
  return !isMemoryEffectFree(&op);
}

struct MapHostCodeToGpuPass
    : momac::impl::MapHostCodeToGpuBase<MapHostCodeToGpuPass> {
  using MapHostCodeToGpuBase::MapHostCodeToGpuBase;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal())
      return;
    // Warps share reductions: a block is whole warps.
    if (threadsPerBlock <= 0 || threadsPerBlock % momac::kWarpSize != 0) {
      func.emitError("moma-map-host-code-to-gpu: threads-per-block must be "
                     "a positive multiple of 32, got ")
          << int64_t(threadsPerBlock);
      return signalPassFailure();
    }
    IRRewriter rewriter(&getContext());
    if (failed(copyGlobalsToDevice(rewriter, func)) ||
        failed(launchHostKernels(rewriter, func)) ||
        failed(launchScalarCode(rewriter, func.getBody().front())) ||
        failed(checkHostScalarsStayOnHost(func)))
      return signalPassFailure();
    allocateOnDevice(rewriter, func);
  }

  /// The caller passes a `moma.host_scalar` argument in host memory: a use
  /// by anything but a host load (a kernel, a copy) would read host memory
  /// on the GPU.
  LogicalResult checkHostScalarsStayOnHost(func::FuncOp func) {
    for (BlockArgument arg : func.getArguments()) {
      if (!func.getArgAttr(arg.getArgNumber(), mlir::moma::kHostScalarAttrName))
        continue;
      for (Operation *user : arg.getUsers())
        if (!readsHostScalar(*user) || isInsideLaunch(user))
          return user->emitError("moma-map-host-code-to-gpu: argument ")
                 << arg.getArgNumber()
                 << " is passed in host memory (moma.host_scalar), but "
                    "device code would read it here";
    }
    return success();
  }

  /// A constant global (a bufferized constant tensor) is host memory: the
  /// step gets a device copy, filled by a kernel when it is a splat.
  LogicalResult copyGlobalsToDevice(IRRewriter &rewriter, func::FuncOp func) {
    SmallVector<memref::GetGlobalOp> globals;
    func.walk([&](memref::GetGlobalOp op) { globals.push_back(op); });
    auto module = func->getParentOfType<ModuleOp>();
    for (memref::GetGlobalOp get : globals) {
      auto global = module.lookupSymbol<memref::GlobalOp>(get.getName());
      if (!global || !global.getConstant() || !global.getInitialValue())
        return get.emitError("moma-map-host-code-to-gpu: a global that is not "
                             "a constant");
      Location loc = get.getLoc();
      rewriter.setInsertionPointAfter(get);
      auto copy = memref::AllocOp::create(rewriter, loc, get.getType());
      auto value = dyn_cast<DenseElementsAttr>(*global.getInitialValue());
      if (value && value.isSplat()) {
        Value splat = arith::ConstantOp::create(
            rewriter, loc, cast<TypedAttr>(value.getSplatValue<Attribute>()));
        linalg::FillOp::create(rewriter, loc, splat, copy.getResult());
        rewriter.replaceAllUsesWith(get, copy);
      } else {
        auto upload = gpu::MemcpyOp::create(rewriter, loc, TypeRange{},
                                            ValueRange{}, copy, get);
        rewriter.replaceAllUsesExcept(get, copy, upload);
      }
      if (get->use_empty())
        rewriter.eraseOp(get);
      // Freed where the function returns.
      for (Operation &op : func.getBody().front())
        if (isa<func::ReturnOp>(op)) {
          rewriter.setInsertionPoint(&op);
          memref::DeallocOp::create(rewriter, loc, copy);
        }
    }
    return success();
  }

  /// Each kernel outside a tile is a launch of its own over the whole
  /// grid (one thread per parallel iteration, 128 per block); the launch
  /// boundaries order it with its neighbours. A whole-buffer copy between
  /// identity layouts is a device-to-device copy instead.
  LogicalResult launchHostKernels(IRRewriter &rewriter, func::FuncOp func) {
    SmallVector<Operation *> kernels;
    func.walk([&](Operation *op) {
      if (isInsideLaunch(op))
        return;
      if (isa<linalg::LinalgOp, memref::CopyOp>(op))
        kernels.push_back(op);
    });
    for (Operation *op : kernels) {
      Location loc = op->getLoc();
      rewriter.setInsertionPoint(op);
      if (auto copy = dyn_cast<memref::CopyOp>(op)) {
        auto source = cast<MemRefType>(copy.getSource().getType());
        auto target = cast<MemRefType>(copy.getTarget().getType());
        if (source.getLayout().isIdentity() && target.getLayout().isIdentity()) {
          gpu::MemcpyOp::create(rewriter, loc, TypeRange{}, ValueRange{},
                                copy.getTarget(), copy.getSource());
          rewriter.eraseOp(copy);
          continue;
        }
        op = linalg::CopyOp::create(rewriter, loc,
                                    ValueRange{copy.getSource()},
                                    ValueRange{copy.getTarget()});
        rewriter.eraseOp(copy);
      }
      auto kernel = cast<linalg::LinalgOp>(op);
      // Iterations of the leading parallel loops: each for one thread, or
      // for a warp when they share the iteration's reduction; a reduction
      // the whole block shares runs on one block.
      int64_t lanes = momac::reductionLanes(kernel, threadsPerBlock,
                                            /*oneBlock=*/true,
                                            /*sizedToKernel=*/true);
      bool wholeBlock = lanes == threadsPerBlock;
      rewriter.setInsertionPoint(kernel);
      SmallVector<Range> ranges = kernel.createLoopRanges(rewriter, loc);
      Value iterations = indexConstant(rewriter, loc, lanes);
      auto iterators = kernel.getIteratorTypesArray();
      for (auto [range, iterator] : llvm::zip(ranges, iterators)) {
        if (iterator != utils::IteratorType::parallel)
          break;
        iterations = arith::MulIOp::create(
            rewriter, loc, iterations,
            getValueOrCreateConstantIndexOp(rewriter, loc, range.size));
      }
      Value threads = indexConstant(rewriter, loc, threadsPerBlock);
      Value one = indexConstant(rewriter, loc, 1);
      Value blocks =
          wholeBlock
              ? one
              : arith::MaxUIOp::create(
                    rewriter, loc, one,
                    arith::CeilDivUIOp::create(rewriter, loc, iterations,
                                               threads))
                    .getResult();
      auto launch = gpu::LaunchOp::create(rewriter, loc, blocks, one, one,
                                          threads, one, one);
      Block &body = launch.getBody().front();
      rewriter.setInsertionPointToStart(&body);
      gpu::TerminatorOp::create(rewriter, loc);
      rewriter.moveOpBefore(kernel, body.getTerminator());
      rewriter.setInsertionPoint(kernel);
      Value threadId = launch.getThreadIds().x;
      Value threadCount = indexConstant(rewriter, loc, threadsPerBlock);
      if (!wholeBlock) {
        threadId = arith::AddIOp::create(
            rewriter, loc,
            arith::MulIOp::create(rewriter, loc, launch.getBlockIds().x,
                                  threadCount),
            threadId);
        threadCount = arith::MulIOp::create(
            rewriter, loc, launch.getGridSize().x, threadCount);
      }
      momac::ThreadDistribution distribution{rewriter, threadId, threadCount,
                                             /*oneBlock=*/wholeBlock};
      if (failed(distribution.lowerKernel(kernel, lanes)))
        return failure();
    }
    return success();
  }

  /// Maximal stretches of device scalar code in `block` (pure ops between
  /// them join the stretch) each run as one single-thread launch; values
  /// the host uses after a stretch come back in one read. Host loops and
  /// branches are handled inside.
  LogicalResult launchScalarCode(IRRewriter &rewriter, Block &block) {
    SmallVector<Operation *> stretch;
    auto flush = [&]() -> LogicalResult {
      // Pure ops that do not depend on the stretch's device code are host
      // arithmetic (grid and buffer sizes): they move above it. The others
      // (arithmetic on values the stretch loads, for later kernels, or on
      // an earlier stretch's values, for this one) run in it, and a host
      // use of theirs is a read.
      llvm::SmallPtrSet<Operation *, 16> kernelOps;
      SmallVector<Operation *> kept;
      for (Operation *op : stretch) {
        if (!isDeviceScalarCode(*op) && !usesResultOf(op, kernelOps)) {
          if (!kept.empty())
            op->moveBefore(kept.front());
          continue;
        }
        kept.push_back(op);
        kernelOps.insert(op);
      }
      stretch = std::move(kept);
      // A stretch of pure ops alone is host arithmetic.
      if (llvm::none_of(stretch, [](Operation *op) {
            return isDeviceScalarCode(*op);
          }))
        stretch.clear();
      LogicalResult result = success();
      if (!stretch.empty())
        result = launchStretch(rewriter, stretch);
      stretch.clear();
      return result;
    };
    for (Operation &op : llvm::make_early_inc_range(block)) {
      if (isDeviceScalarCode(op)) {
        stretch.push_back(&op);
        continue;
      }
      bool pure = op.getNumRegions() == 0 && isMemoryEffectFree(&op) &&
                  !staysOnHost(op) && !op.hasTrait<OpTrait::ConstantLike>();
      if (pure) {
        stretch.push_back(&op);
        continue;
      }
      // Host ops inside a stretch need not end it: a deallocation stays
      // after the stretch's launch (a later free), an allocation, a view or
      // a constant that does not depend on the stretch moves before it.
      if (!stretch.empty()) {
        if (isa<memref::DeallocOp>(op))
          continue;
        bool movable = isa<memref::AllocOp, memref::AllocaOp, memref::DimOp,
                           memref::ExtractStridedMetadataOp,
                           memref::ExtractAlignedPointerAsIndexOp,
                           ViewLikeOpInterface>(op) ||
                       op.hasTrait<OpTrait::ConstantLike>();
        llvm::SmallPtrSet<Operation *, 16> inside(stretch.begin(),
                                                  stretch.end());
        if (movable && !usesResultOf(&op, inside) &&
            op.getNumRegions() == 0) {
          op.moveBefore(stretch.front());
          continue;
        }
      }
      if (failed(flush()))
        return failure();
      if (op.getNumRegions() > 0 && !isa<gpu::LaunchOp>(op))
        for (Region &region : op.getRegions())
          for (Block &inner : region)
            if (failed(launchScalarCode(rewriter, inner)))
              return failure();
    }
    return flush();
  }

  LogicalResult launchStretch(IRRewriter &rewriter,
                              ArrayRef<Operation *> stretch) {
    Location loc = stretch.front()->getLoc();
    llvm::SmallPtrSet<Operation *, 16> inside(stretch.begin(), stretch.end());
    // Results used after the stretch: the host needs them back.
    SmallVector<Value> escaping;
    for (Operation *op : stretch)
      for (Value result : op->getResults())
        if (llvm::any_of(result.getUsers(), [&](Operation *user) {
              Operation *owner =
                  op->getBlock()->findAncestorOpInBlock(*user);
              return !owner || !inside.contains(owner);
            }))
          escaping.push_back(result);
    for (Value value : escaping)
      if (!value.getType().isIndex() &&
          (!value.getType().isIntOrFloat() ||
           value.getType().getIntOrFloatBitWidth() > 64))
        return value.getDefiningOp()->emitError(
            "moma-map-host-code-to-gpu: the host needs a value of type ")
               << value.getType() << " computed on the device";

    rewriter.setInsertionPoint(stretch.front());
    Value results;
    Type i64 = rewriter.getI64Type();
    auto resultsType = MemRefType::get(
        {static_cast<int64_t>(escaping.size())}, i64);
    if (!escaping.empty())
      results = memref::AllocOp::create(rewriter, loc, resultsType);
    Value one = indexConstant(rewriter, loc, 1);
    auto launch =
        gpu::LaunchOp::create(rewriter, loc, one, one, one, one, one, one);
    Block &body = launch.getBody().front();
    rewriter.setInsertionPointToStart(&body);
    auto terminator = gpu::TerminatorOp::create(rewriter, loc);
    for (Operation *op : stretch)
      rewriter.moveOpBefore(op, terminator);
    rewriter.setInsertionPoint(terminator);
    for (auto [i, value] : llvm::enumerate(escaping)) {
      Value bits = value;
      Type type = value.getType();
      if (type.isIndex())
        bits = arith::IndexCastOp::create(rewriter, loc, i64, value);
      else if (auto floatType = dyn_cast<FloatType>(type)) {
        bits = arith::BitcastOp::create(
            rewriter, loc, rewriter.getIntegerType(floatType.getWidth()),
            value);
        if (floatType.getWidth() < 64)
          bits = arith::ExtUIOp::create(rewriter, loc, i64, bits);
      } else if (type.getIntOrFloatBitWidth() < 64)
        bits = arith::ExtUIOp::create(rewriter, loc, i64, value);
      memref::StoreOp::create(rewriter, loc, bits, results,
                              indexConstant(rewriter, loc, i));
    }
    if (escaping.empty())
      return success();

    // Converts the i64 at `index` of `buffer` back to `type`.
    auto load = [&](OpBuilder &b, Value buffer, int64_t index, Type type) {
      Value bits = memref::LoadOp::create(b, loc, buffer,
                                          indexConstant(b, loc, index));
      if (type.isIndex())
        return Value(arith::IndexCastOp::create(b, loc, type, bits));
      if (auto floatType = dyn_cast<FloatType>(type)) {
        if (floatType.getWidth() < 64)
          bits = arith::TruncIOp::create(
              b, loc, b.getIntegerType(floatType.getWidth()), bits);
        return Value(arith::BitcastOp::create(b, loc, type, bits));
      }
      if (type.getIntOrFloatBitWidth() < 64)
        return Value(arith::TruncIOp::create(b, loc, type, bits));
      return bits;
    };
    // What host code uses (a buffer's size, a grid, a loop bound) is read
    // back, and later kernels get it as an argument; a value only later
    // kernels use (a loss's count, a clipping factor) they load from the
    // device buffer, without a read.
    auto usedByHost = [&](Value value) {
      return llvm::any_of(value.getUsers(), [&](Operation *user) {
        return !user->getParentOfType<gpu::LaunchOp>();
      });
    };
    bool hostReads = false;
    for (auto [i, value] : llvm::enumerate(escaping)) {
      if (usedByHost(value)) {
        hostReads = true;
        continue;
      }
      for (OpOperand &use : llvm::make_early_inc_range(value.getUses())) {
        auto user = use.getOwner()->getParentOfType<gpu::LaunchOp>();
        if (user == launch)
          continue;
        OpBuilder::InsertionGuard guard(rewriter);
        rewriter.setInsertionPointToStart(&user.getBody().front());
        use.set(load(rewriter, results, i, value.getType()));
      }
    }
    // The buffer lives to the end of its block, where the last kernel that
    // reads it has been issued.
    rewriter.setInsertionPoint(launch->getBlock()->getTerminator());
    memref::DeallocOp::create(rewriter, loc, results);
    if (!hostReads)
      return success();

    // The read: one copy to the host, which waits for the stream (the
    // runtime's momart_cuda_read_to_host), then the values in their own
    // types.
    rewriter.setInsertionPointAfter(launch);
    Value host = memref::AllocaOp::create(rewriter, loc, resultsType);
    auto module = launch->getParentOfType<ModuleOp>();
    Type ptr = LLVM::LLVMPointerType::get(rewriter.getContext());
    auto readToHost = module.lookupSymbol<func::FuncOp>(kReadToHost);
    if (!readToHost) {
      OpBuilder::InsertionGuard guard(rewriter);
      rewriter.setInsertionPointToStart(module.getBody());
      readToHost = func::FuncOp::create(
          rewriter, loc, kReadToHost,
          rewriter.getFunctionType({ptr, ptr, rewriter.getI64Type()}, {}));
      readToHost.setPrivate();
    }
    auto address = [&](Value buffer) -> Value {
      Value index =
          memref::ExtractAlignedPointerAsIndexOp::create(rewriter, loc, buffer);
      Value integer = arith::IndexCastOp::create(
          rewriter, loc, rewriter.getI64Type(), index);
      return LLVM::IntToPtrOp::create(rewriter, loc, ptr, integer).getResult();
    };
    func::CallOp::create(
        rewriter, loc, readToHost,
        ValueRange{address(host), address(results),
                   arith::ConstantIntOp::create(rewriter, loc,
                                                rewriter.getI64Type(),
                                                8 * escaping.size())});
    for (auto [i, value] : llvm::enumerate(escaping)) {
      if (llvm::all_of(value.getUsers(), [&](Operation *user) {
            return launch->isProperAncestor(user);
          }))
        continue;
      Value back = load(rewriter, host, i, value.getType());
      rewriter.replaceUsesWithIf(value, back, [&](OpOperand &use) {
        return !launch->isProperAncestor(use.getOwner());
      });
    }
    return success();
  }

  /// The step's buffers are the GPU's.
  void allocateOnDevice(IRRewriter &rewriter, func::FuncOp func) {
    SmallVector<Operation *> allocations;
    func.walk([&](Operation *op) {
      if (isa<memref::AllocOp, memref::DeallocOp>(op) && !isInsideLaunch(op))
        allocations.push_back(op);
    });
    for (Operation *op : allocations) {
      rewriter.setInsertionPoint(op);
      if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
        auto device = gpu::AllocOp::create(
            rewriter, alloc.getLoc(), alloc.getType(), /*asyncToken=*/Type(),
            ValueRange{}, alloc.getDynamicSizes(), alloc.getSymbolOperands());
        rewriter.replaceOp(alloc, device.getMemref());
        continue;
      }
      auto dealloc = cast<memref::DeallocOp>(op);
      gpu::DeallocOp::create(rewriter, dealloc.getLoc(), TypeRange{},
                             ValueRange{}, dealloc.getMemref());
      rewriter.eraseOp(dealloc);
    }
  }
};

} // namespace
