# lit configuration for momac's tool tests (moma-opt, momac).
import os

import lit.formats

config.name = "momac"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.momac_obj_root, "test")
config.excludes = ["unit", "e2e", "Inputs", "CMakeLists.txt", "lit.cfg.py"]

config.environment["PATH"] = os.pathsep.join(
    [os.path.join(config.momac_obj_root, "bin"), config.llvm_tools_dir,
     config.environment.get("PATH", os.environ.get("PATH", ""))])
config.substitutions.append(
    ("%examples", os.path.join(config.momac_src_root, "examples")))
# The interpreter running lit, for tests that read JSON.
import sys
config.substitutions.append(("%python", sys.executable))

# momac built with CUDA: --target=cuda compiles (tests: REQUIRES: cuda).
if config.momac_cuda.upper() in ("ON", "1", "TRUE", "YES"):
    config.available_features.add("cuda")

# This machine has the NVIDIA driver (a CUDA artifact can try to run).
try:
    import ctypes
    ctypes.CDLL("libcuda.so.1")
    config.available_features.add("nvidia-driver")
except OSError:
    pass
