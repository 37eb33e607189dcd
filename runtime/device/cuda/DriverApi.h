//===- DriverApi.h - The CUDA driver, loaded when first needed --*- C++ -*-===//
//
// An artifact is a shared library that momarun dlopens on any machine; one
// linked against libcuda.so.1 would not even load where the NVIDIA driver
// is missing, and momarun could not say why. So the driver is opened at
// first use (as the CUDA runtime library itself does) and its functions
// looked up by their versioned names (cuda.h maps cuMemAlloc to
// cuMemAlloc_v2, ...).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_DRIVERAPI_H
#define MOMAC_RUNTIME_DEVICE_CUDA_DRIVERAPI_H

#include <cuda.h>

#include <string>

namespace momac::cuda {

#define MOMAC_CUDA_DRIVER_FUNCTIONS(X)                                         \
  X(cuInit)                                                                    \
  X(cuDriverGetVersion)                                                        \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDeviceTotalMem)                                                          \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuCtxSetCurrent)                                                           \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy)                                                           \
  X(cuStreamSynchronize)                                                       \
  X(cuStreamWaitEvent)                                                         \
  X(cuEventCreate)                                                             \
  X(cuEventDestroy)                                                            \
  X(cuEventSynchronize)                                                        \
  X(cuEventRecord)                                                             \
  X(cuMemAlloc)                                                                \
  X(cuMemFree)                                                                 \
  X(cuMemGetInfo)                                                              \
  X(cuMemcpyAsync)                                                             \
  X(cuMemcpyHtoDAsync)                                                         \
  X(cuMemcpyDtoHAsync)                                                         \
  X(cuMemsetD8Async)                                                           \
  X(cuMemsetD16Async)                                                          \
  X(cuMemsetD32Async)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleLoadDataEx)                                                        \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuLaunchKernel)

struct DriverApi {
#define MOMAC_DECLARE_DRIVER_FUNCTION(name) decltype(&::name) name = nullptr;
  MOMAC_CUDA_DRIVER_FUNCTIONS(MOMAC_DECLARE_DRIVER_FUNCTION)
#undef MOMAC_DECLARE_DRIVER_FUNCTION
};

/// The driver's functions, from libcuda.so.1 opened on the first call.
/// Null when the library or one of its functions is missing; `why` then
/// says which.
const DriverApi *driverApi(std::string &why);

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_DRIVERAPI_H
