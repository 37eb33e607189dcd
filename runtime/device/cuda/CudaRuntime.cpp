//===- CudaRuntime.cpp - mgpu* ABI and momarun's calls, on the driver -----===//

#include "runtime/device/cuda/CudaRuntime.h"
#include "runtime/device/cuda/CudaState.h"
#include "runtime/device/cuda/DeviceChoice.h"
#include "runtime/device/cuda/DriverApi.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

using namespace momac::cuda;

namespace {

/// The lowest driver (CUDA version) that loads PTX 8.0, which the embedded
/// kernels are.
constexpr int kRequiredDriverVersion = 12000;

/// The driver; only called once initialize() has found it.
const DriverApi &api() {
  std::string why;
  return *driverApi(why);
}

struct State {
  std::once_flag initialized;
  std::string status;       // why the device is unusable; empty when fine
  std::string error;        // the pending error
  std::string takenError;   // what momart_cuda_take_error last returned
  CUdevice device = 0;
  /// Which GPU of those visible, and why (DeviceChoice.h).
  DeviceChoice choice;
  /// MOMA_CUDA_SYNC_LAUNCHES=1: wait after each launch (afterLibraryCall).
  bool syncLaunches = false;
  CUcontext context = nullptr;
  CUstream stream = nullptr;
  std::unordered_map<CUfunction, std::string> kernelNames;
  CachingAllocator allocator{
      [](size_t bytes) -> void * {
        CUdeviceptr pointer = 0;
        if (api().cuMemAlloc(&pointer, bytes) != CUDA_SUCCESS)
          return nullptr;
        return reinterpret_cast<void *>(pointer);
      },
      [](void *pointer) { api().cuMemFree(reinterpret_cast<CUdeviceptr>(pointer)); }};
};

State &state() {
  static State *instance = new State; // outlives the artifact's destructors
  return *instance;
}

std::string describe(CUresult result) {
  const char *name = nullptr, *text = nullptr;
  api().cuGetErrorName(result, &name);
  api().cuGetErrorString(result, &text);
  return std::string(name ? name : "CUDA error " + std::to_string(result)) +
         (text ? std::string(" (") + text + ")" : "");
}

void initialize(State &s) {
  std::string why;
  if (!driverApi(why)) {
    s.status = why;
    return;
  }
  CUresult result = api().cuInit(0);
  if (result == CUDA_ERROR_NO_DEVICE) {
    s.status = "no CUDA device: this machine has no NVIDIA GPU the driver "
               "can use (or CUDA_VISIBLE_DEVICES hides them)";
    return;
  }
  if (result != CUDA_SUCCESS) {
    s.status = "the CUDA driver did not start: " + describe(result);
    return;
  }
  int driverVersion = 0;
  api().cuDriverGetVersion(&driverVersion);
  if (driverVersion < kRequiredDriverVersion) {
    s.status = "the CUDA driver supports CUDA " +
               std::to_string(driverVersion / 1000) + "." +
               std::to_string(driverVersion % 1000 / 10) +
               "; these kernels (PTX 8.0) need 12.0 or newer: update the "
               "NVIDIA driver";
    return;
  }
  int count = 0;
  if (api().cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    s.status = "no CUDA device";
    return;
  }
  s.choice = chooseDevice(count, [](const char *name) -> const char * {
    return std::getenv(name);
  });
  if (!s.choice.error.empty()) {
    s.status = s.choice.error;
    return;
  }
  const char *sync = std::getenv("MOMA_CUDA_SYNC_LAUNCHES");
  s.syncLaunches = sync && std::string(sync) == "1";
  const char *caching = std::getenv("MOMA_CUDA_CACHING_ALLOCATOR");
  if (caching && std::string(caching) == "0")
    s.allocator.disableCaching();
  if ((result = api().cuDeviceGet(&s.device, s.choice.ordinal)) !=
          CUDA_SUCCESS ||
      (result = api().cuDevicePrimaryCtxRetain(&s.context, s.device)) !=
          CUDA_SUCCESS ||
      (result = api().cuCtxSetCurrent(s.context)) != CUDA_SUCCESS ||
      (result = api().cuStreamCreate(&s.stream, CU_STREAM_NON_BLOCKING)) !=
          CUDA_SUCCESS) {
    s.status = "cannot set up the GPU: " + describe(result);
    return;
  }
}

} // namespace

bool momac::cuda::ready() {
  State &s = state();
  std::call_once(s.initialized, [&] { initialize(s); });
  if (!s.status.empty())
    return false;
  api().cuCtxSetCurrent(s.context);
  return s.error.empty();
}

CUstream momac::cuda::stepStream() { return state().stream; }

CachingAllocator &momac::cuda::allocator() { return state().allocator; }

void momac::cuda::recordError(const std::string &message) {
  State &s = state();
  if (s.error.empty())
    s.error = message;
}

namespace {
StreamWait installedWait = nullptr;

/// A copy between the device and pageable host memory returns only once
/// the work queued before it is done: with NCCL up, the stream is first
/// drained through the bounded wait, so that a lost rank cannot hang the
/// copy itself.
bool drainBeforeHostCopy(const std::string &what) {
  return !installedWait || waitForStepStream(what);
}
} // namespace

void momac::cuda::setStreamWait(StreamWait wait) { installedWait = wait; }

bool momac::cuda::waitForStepStream(const std::string &what) {
  if (installedWait)
    return installedWait(what);
  return check(api().cuStreamSynchronize(stepStream()),
               "cuStreamSynchronize (" + what + ")");
}

bool momac::cuda::syncEachLaunch() { return state().syncLaunches; }

void momac::cuda::afterLibraryCall(const std::string &what) {
  State &s = state();
  if (!s.syncLaunches || !s.error.empty())
    return;
  CUresult result = api().cuStreamSynchronize(stepStream());
  if (result != CUDA_SUCCESS)
    recordError(what + " failed (MOMA_CUDA_SYNC_LAUNCHES=1: found when "
                       "waiting right after it): " +
                describe(result));
}

bool momac::cuda::check(CUresult result, const std::string &call) {
  if (result == CUDA_SUCCESS)
    return true;
  recordError(call + ": " + describe(result));
  return false;
}

// --- momarun's side ----------------------------------------------------------

extern "C" const char *momart_cuda_status(void) {
  State &s = state();
  ready();
  if (!s.status.empty())
    return s.status.c_str();
  if (!s.error.empty())
    return s.error.c_str();
  return nullptr;
}

extern "C" bool momart_cuda_device(char *name, size_t nameSize,
                                   size_t *totalBytes) {
  State &s = state();
  if (!ready() && !s.status.empty())
    return false;
  if (name && nameSize > 0 &&
      api().cuDeviceGetName(name, static_cast<int>(nameSize), s.device) !=
          CUDA_SUCCESS)
    name[0] = '\0';
  if (totalBytes && api().cuDeviceTotalMem(totalBytes, s.device) != CUDA_SUCCESS)
    *totalBytes = 0;
  return true;
}

extern "C" bool momart_cuda_memory_info(size_t *freeBytes, size_t *totalBytes) {
  if (!ready())
    return false;
  return api().cuMemGetInfo(freeBytes, totalBytes) == CUDA_SUCCESS;
}

extern "C" const char *momart_cuda_device_choice(void) {
  State &s = state();
  ready();
  return s.choice.reason.c_str();
}

extern "C" void *momart_cuda_alloc(size_t bytes) {
  if (!ready())
    return nullptr;
  void *pointer = allocator().allocate(bytes);
  if (!pointer) {
    size_t freeBytes = 0, totalBytes = 0;
    api().cuMemGetInfo(&freeBytes, &totalBytes);
    recordError("out of GPU memory: " + std::to_string(bytes) +
                " bytes asked, " + std::to_string(freeBytes) + " of " +
                std::to_string(totalBytes) + " free");
  }
  return pointer;
}

extern "C" void momart_cuda_free(void *pointer) {
  if (pointer && !allocator().free(pointer))
    recordError("momart_cuda_free: a pointer the allocator did not hand out");
}

extern "C" void momart_cuda_copy_to_device(void *device, const void *host,
                                           size_t bytes) {
  if (!ready() || bytes == 0 || !drainBeforeHostCopy("a copy to the GPU"))
    return;
  check(api().cuMemcpyHtoDAsync(reinterpret_cast<CUdeviceptr>(device), host, bytes,
                          stepStream()),
        "cuMemcpyHtoDAsync");
  // The host buffer may change once this returns.
  waitForStepStream("a copy to the GPU");
}

extern "C" void momart_cuda_copy_to_host(void *host, const void *device,
                                         size_t bytes) {
  if (!ready()) {
    std::memset(host, 0, bytes);
    return;
  }
  if (bytes == 0)
    return;
  if (!drainBeforeHostCopy("a copy to the host") ||
      !check(api().cuMemcpyDtoHAsync(host, reinterpret_cast<CUdeviceptr>(device),
                               bytes, stepStream()),
             "cuMemcpyDtoHAsync") ||
      !waitForStepStream("a copy to the host"))
    std::memset(host, 0, bytes);
}

extern "C" void momart_cuda_zero(void *device, size_t bytes) {
  if (!ready() || bytes == 0)
    return;
  check(api().cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(device), 0, bytes,
                        stepStream()),
        "cuMemsetD8Async");
}

extern "C" void momart_cuda_copy_device(void *to, const void *from,
                                        size_t bytes) {
  if (!ready() || bytes == 0)
    return;
  check(api().cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(to),
                            reinterpret_cast<CUdeviceptr>(from), bytes,
                            stepStream()),
        "cuMemcpyAsync (device to device)");
}

extern "C" void momart_cuda_synchronize(void) {
  if (ready())
    waitForStepStream("the end of a call");
}

extern "C" const char *momart_cuda_take_error(void) {
  State &s = state();
  if (s.error.empty())
    return nullptr;
  s.takenError = s.error;
  s.error.clear();
  return s.takenError.c_str();
}

extern "C" void momart_cuda_memory(size_t *inUse, size_t *cached,
                                   size_t *peak) {
  CachingAllocator::Statistics stats = allocator().statistics();
  if (inUse)
    *inUse = stats.bytesInUse;
  if (cached)
    *cached = stats.bytesCached;
  if (peak)
    *peak = stats.peakBytesInUse;
}

// --- the compiled step's side ------------------------------------------------

extern "C" void momart_cuda_read_to_host(void *host, const void *device,
                                         int64_t bytes) {
  momart_cuda_copy_to_host(host, device, static_cast<size_t>(bytes));
}

// --- the mgpu* ABI -------------------------------------------------------------

extern "C" void *mgpuModuleLoad(void *data, size_t) {
  if (!ready())
    return nullptr;
  CUmodule module = nullptr;
  CUresult result = api().cuModuleLoadData(&module, data);
  if (result == CUDA_ERROR_NO_BINARY_FOR_GPU ||
      result == CUDA_ERROR_UNSUPPORTED_PTX_VERSION ||
      result == CUDA_ERROR_INVALID_PTX) {
    int major = 0, minor = 0;
    api().cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                         state().device);
    api().cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                         state().device);
    recordError("the GPU (compute capability " + std::to_string(major) + "." +
                std::to_string(minor) +
                ") cannot run the embedded kernels (sm_90 cubin and PTX "
                "8.0): " +
                describe(result));
    return nullptr;
  }
  check(result, "cuModuleLoadData");
  return module;
}

extern "C" void *mgpuModuleLoadJIT(void *data, int optLevel) {
  if (!ready())
    return nullptr;
  CUmodule module = nullptr;
  CUjit_option options[] = {CU_JIT_OPTIMIZATION_LEVEL};
  void *values[] = {reinterpret_cast<void *>(static_cast<intptr_t>(optLevel))};
  check(api().cuModuleLoadDataEx(&module, data, 1, options, values),
        "cuModuleLoadDataEx (JIT)");
  return module;
}

extern "C" void mgpuModuleUnload(void *module) {
  // At process exit the driver may already be gone; nothing to report.
  if (module && state().status.empty())
    api().cuModuleUnload(static_cast<CUmodule>(module));
}

extern "C" void *mgpuModuleGetFunction(void *module, const char *name) {
  if (!module || !ready())
    return nullptr;
  CUfunction function = nullptr;
  if (!check(api().cuModuleGetFunction(&function, static_cast<CUmodule>(module),
                                 name),
             std::string("api().cuModuleGetFunction(") + name + ")"))
    return nullptr;
  state().kernelNames.emplace(function, name);
  return function;
}

extern "C" void mgpuLaunchKernel(void *function, intptr_t gridX,
                                 intptr_t gridY, intptr_t gridZ,
                                 intptr_t blockX, intptr_t blockY,
                                 intptr_t blockZ, int32_t smem, void *stream,
                                 void **params, void **extra, size_t) {
  if (!function || !ready())
    return;
  // A grid over an empty token set (a modality with no tokens in the batch)
  // has no blocks: nothing to run.
  if (gridX <= 0 || gridY <= 0 || gridZ <= 0)
    return;
  auto cuFunction = static_cast<CUfunction>(function);
  auto describeLaunch = [&] {
    auto name = state().kernelNames.find(cuFunction);
    return (name == state().kernelNames.end() ? std::string("?")
                                              : name->second) +
           ", grid " + std::to_string(gridX) + "x" + std::to_string(gridY) +
           "x" + std::to_string(gridZ) + ", block " + std::to_string(blockX) +
           "x" + std::to_string(blockY) + "x" + std::to_string(blockZ);
  };
  std::string limit =
      launchLimitError(gridX, gridY, gridZ, blockX, blockY, blockZ);
  if (!limit.empty()) {
    recordError("kernel " + describeLaunch() + ": " + limit);
    return;
  }
  CUresult result = api().cuLaunchKernel(
      cuFunction, gridX, gridY, gridZ, blockX, blockY, blockZ, smem,
      static_cast<CUstream>(stream), params, extra);
  if (result != CUDA_SUCCESS)
    check(result, "cuLaunchKernel(" + describeLaunch() + ")");
  else if (state().syncLaunches)
    afterLibraryCall("kernel " + describeLaunch());
}

extern "C" void *mgpuStreamCreate(void) {
  ready();
  return stepStream();
}

extern "C" void mgpuStreamDestroy(void *stream) {
  // The step's stream lives as long as the process.
  if (stream && stream != stepStream())
    api().cuStreamDestroy(static_cast<CUstream>(stream));
}

extern "C" void mgpuStreamSynchronize(void *stream) {
  if (!ready())
    return;
  if (stream == stepStream())
    waitForStepStream("the end of a step; an earlier kernel may have failed");
  else
    check(api().cuStreamSynchronize(static_cast<CUstream>(stream)),
          "cuStreamSynchronize (the end of a step; an earlier kernel may "
          "have failed)");
}

extern "C" void mgpuStreamWaitEvent(void *stream, void *event) {
  if (ready())
    check(api().cuStreamWaitEvent(static_cast<CUstream>(stream),
                            static_cast<CUevent>(event), 0),
          "cuStreamWaitEvent");
}

extern "C" void *mgpuEventCreate(void) {
  CUevent event = nullptr;
  if (ready())
    check(api().cuEventCreate(&event, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  return event;
}

extern "C" void mgpuEventDestroy(void *event) {
  if (event && ready())
    api().cuEventDestroy(static_cast<CUevent>(event));
}

extern "C" void mgpuEventSynchronize(void *event) {
  if (event && ready())
    check(api().cuEventSynchronize(static_cast<CUevent>(event)),
          "cuEventSynchronize");
}

extern "C" void mgpuEventRecord(void *event, void *stream) {
  if (event && ready())
    check(api().cuEventRecord(static_cast<CUevent>(event),
                        static_cast<CUstream>(stream)),
          "cuEventRecord");
}

extern "C" void *mgpuMemAlloc(uint64_t sizeBytes, void *, bool) {
  return momart_cuda_alloc(sizeBytes);
}

extern "C" void mgpuMemFree(void *ptr, void *) { momart_cuda_free(ptr); }

extern "C" void mgpuMemcpy(void *dst, void *src, size_t sizeBytes,
                           void *stream) {
  if (!ready() || sizeBytes == 0)
    return;
  check(api().cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                      reinterpret_cast<CUdeviceptr>(src), sizeBytes,
                      static_cast<CUstream>(stream)),
        "cuMemcpyAsync");
}

extern "C" void mgpuMemset32(void *dst, unsigned int value, size_t count,
                             void *stream) {
  if (ready())
    check(api().cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(dst), value, count,
                           static_cast<CUstream>(stream)),
          "cuMemsetD32Async");
}

extern "C" void mgpuMemset16(void *dst, unsigned short value, size_t count,
                             void *stream) {
  if (ready())
    check(api().cuMemsetD16Async(reinterpret_cast<CUdeviceptr>(dst), value, count,
                           static_cast<CUstream>(stream)),
          "cuMemsetD16Async");
}

extern "C" void mgpuSetDefaultDevice(int32_t) {
  // One device per process: momarun's rank picks it through
  // CUDA_VISIBLE_DEVICES.
}
