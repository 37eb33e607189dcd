//===- DriverApi.cpp - The CUDA driver, loaded when first needed ----------===//

#include "runtime/device/cuda/DriverApi.h"

#include <dlfcn.h>

using namespace momac::cuda;

namespace {

struct Loaded {
  DriverApi api;
  std::string why;
  bool ok = false;
};

Loaded load() {
  Loaded loaded;
  void *library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!library) {
    const char *error = dlerror();
    loaded.why = std::string("no NVIDIA driver: cannot load libcuda.so.1 (") +
                 (error ? error : "not found") +
                 "); install the NVIDIA driver to run CUDA artifacts";
    return loaded;
  }
  // The argument is macro-expanded before it is stringized: the versioned
  // name that cuda.h maps the function to.
#define MOMAC_LOAD_DRIVER_FUNCTION(name) MOMAC_LOAD_DRIVER_SYMBOL(name)
#define MOMAC_LOAD_DRIVER_SYMBOL(name)                                         \
  loaded.api.name =                                                            \
      reinterpret_cast<decltype(loaded.api.name)>(dlsym(library, #name));      \
  if (!loaded.api.name) {                                                      \
    loaded.why = "the NVIDIA driver is too old: libcuda.so.1 has no " #name;   \
    return loaded;                                                             \
  }
  MOMAC_CUDA_DRIVER_FUNCTIONS(MOMAC_LOAD_DRIVER_FUNCTION)
#undef MOMAC_LOAD_DRIVER_SYMBOL
#undef MOMAC_LOAD_DRIVER_FUNCTION
  loaded.ok = true;
  return loaded;
}

} // namespace

const DriverApi *momac::cuda::driverApi(std::string &why) {
  static const Loaded loaded = load();
  if (!loaded.ok) {
    why = loaded.why;
    return nullptr;
  }
  return &loaded.api;
}
