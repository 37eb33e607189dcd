"""The GPU bundle (scripts/gpu-bundle.sh) before any GPU sees it:

- built with cuda-emulated artifacts, its run.sh --emulated runs every check
  section on this CPU and passes, with each section of the report filled;
- built with CUDA artifacts, it is closed (every shared library a binary or
  artifact needs is in it or on the allow-list, every symbol resolves) and
  within its size limit, and the closure check does catch a binary that
  needs a library the GPU machine lacks.

Tiny models only (--models tiny): the full bundle adds larger models to the
same scripts. Needs the build (MOMAC_BUILD_DIR) and, for the closure test, a
build with CUDA.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
BUNDLE = os.path.join(ROOT, "scripts", "gpu-bundle.sh")
SECTIONS = ["environment", "unit", "numerics", "training", "fsdp", "sanitizer",
            "speed", "cublas"]


def bundle(*args):
    result = subprocess.run([BUNDLE, *args], capture_output=True, text=True,
                            env=dict(os.environ, MOMAC_BUILD_DIR=BUILD))
    return result.returncode, result.stdout + result.stderr


class EmulatedBundle(unittest.TestCase):
    def test_run_sh_emulated_passes_every_section(self):
        with tempfile.TemporaryDirectory() as tmp:
            code, output = bundle("--emulated", "--models", "tiny", tmp + "/bundle")
            self.assertEqual(code, 0, output)
            out = tmp + "/out"
            result = subprocess.run([tmp + "/bundle/run.sh", "--emulated"],
                                    capture_output=True, text=True,
                                    env=dict(os.environ, OUT=out, OMP_NUM_THREADS="2"))
            with open(os.path.join(out, "gpu-report.json")) as f:
                report = json.load(f)
            with open(os.path.join(out, "gpu-report.md")) as f:
                markdown = f.read()
            self.assertEqual(result.returncode, 0, result.stdout[-4000:] + markdown)
            self.assertTrue(os.path.getsize(os.path.join(out, "gpu-run.log")) > 0)
            rows = report["sections"]
            for section in SECTIONS:
                self.assertTrue(rows[section], f"section {section} is empty:\n{markdown}")
                self.assertIn(f"## {section}", markdown)
            failed = [r for s in rows.values() for r in s if r["result"] == "FAIL"]
            self.assertEqual(failed, [], markdown)
            # 3 models x 2 precisions x B = 1, 3, each compared tensor by tensor
            # (a possible top-k flip is reported as such, never as ok).
            grads = rows["numerics"]
            self.assertEqual(len(grads), 12, markdown)
            self.assertTrue(all(r["result"] in ("ok", "flip") for r in grads), markdown)
            self.assertTrue(all(r["tensors"] > 10 for r in grads), markdown)
            self.assertTrue(any("MoD padded path" in r["detail"] for r in grads), markdown)
            training = rows["training"]
            self.assertEqual([r["result"] for r in training], ["ok", "ok"], markdown)
            self.assertEqual(len(training[0]["losses"]), 20)
            self.assertIn("state up", training[0]["detail"])
            self.assertEqual(rows["fsdp"][0]["result"], "ok", markdown)
            speed = rows["speed"][0]
            self.assertGreater(speed["momarun_tokens_per_s"], 0, markdown)
            self.assertIsInstance(speed.get("torch_eager_tokens_per_s"), float, markdown)


@unittest.skipUnless(os.path.exists(os.path.join(BUILD, "bin", "momac-cuda-unittests")),
                     "a build without CUDA makes no CUDA bundle")
class CudaBundleClosure(unittest.TestCase):
    def test_closed_and_within_the_size_limit(self):
        with tempfile.TemporaryDirectory() as tmp:
            directory = tmp + "/bundle"
            code, output = bundle("--models", "tiny", directory)
            self.assertEqual(code, 0, output)
            self.assertIn("MiB", output)
            code, output = bundle("--check-closure", directory)
            self.assertEqual(code, 0, output)
            self.assertIn("closed", output)
            # momarun needs no LLVM, MPI or BLAS library; the artifacts no
            # CPU-only library.
            needed = subprocess.run(["readelf", "-d", directory + "/bin/momarun"],
                                    capture_output=True, text=True).stdout
            for library in ("libLLVM", "libmpi", "libopenblas", "libdnnl", "libomp"):
                self.assertNotIn(library, needed)
            # A binary that needs libLLVM (momac) is caught.
            shutil.copy(os.path.join(BUILD, "bin", "momac"), directory + "/bin/")
            code, output = bundle("--check-closure", directory)
            self.assertNotEqual(code, 0, output)
            self.assertRegex(output, r"bin/momac needs libLLVM\.so\S*, which is neither in "
                                     r"the bundle nor on the allow-list")


if __name__ == "__main__":
    unittest.main()
