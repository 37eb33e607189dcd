#!/usr/bin/python3
"""Training throughput of momarun against an efficient eager PyTorch step, side by side.

For each preset and variant: compiles the model with momac (timed), trains it
with `momarun train` on a synthetic mixed-modal corpus, runs the same number
of steps of bench/eager_step.py (eager PyTorch 1.13, fp32, batched expert
GEMMs, AdamW foreach) on batches of alternating text and image runs, and
prints tokens/s of both, their ratio (precision against precision: momarun
fp32 against the fp32 eager step, momarun bf16 against the eager step under
torch.autocast("cpu", dtype=torch.bfloat16)), each one's tokens/s relative to the
preset's dense variant, each one's achieved GFLOP/s as a fraction of a plain
fp32 GEMM measured in the same run, momarun's peak resident memory next to
what `momac --stats` predicts, and the compile time. Medians over the timed steps (the first step is not timed).
The header names the CPU, the kernels OpenBLAS runs for torch
(openblas_get_corename) and momarun's GEMM line.

The process environment is the one a performance-minded user sets for
Debian's torch (its pthread OpenBLAS spins against torch's pool without the
timeout); the script re-executes itself with it, so both sides run in it:
  GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
  OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4, torch.set_num_threads(2)

Run after scripts/build.sh, with Debian's python3:
  bench/run.py [--presets bench-tiny,small90] [--variants dense,moe_4t4i]
               [--precisions fp32,bf16] [--steps N]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

TUNED_ENV = {
    "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736",
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",
    "OMP_NUM_THREADS": "2",
}
if any(os.environ.get(k) != v for k, v in TUNED_ENV.items()):
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **TUNED_ENV})

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
import eager_step  # noqa: E402
import moma_reference as R  # noqa: E402
from presets import describe  # noqa: E402

BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")

DEFAULT_VARIANTS = {
    "bench-tiny": ["dense", "moe_1t1i", "moe_4t4i", "mod_moe_4t4i",
                   "mod_moe_4t4i_matched"],
    "small90": ["dense", "moe_4t4i", "mod_moe_4t4i_matched"],
}


def run(*args):
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def gemm_gflops(size=1024, repeats=10, dtype=torch.float32):
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_model():
    with open("/proc/cpuinfo") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    strip = {k.strip(): v.strip() for k, v in fields.items()}
    return (f"{strip.get('model name', '?')} (family {strip.get('cpu family', '?')}, "
            f"model {strip.get('model', '?')})")


def openblas_corename():
    """The kernels of the OpenBLAS loaded into this process (torch's BLAS)."""
    import ctypes
    for name in ("libopenblas.so.0", "libopenblasp.so.0"):
        try:
            lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    return "no OpenBLAS"


def mixed_batch(cfg, generator):
    """[B, S+1] ids: alternating text and image runs of 64..256 tokens."""
    B, S1 = cfg["train"]["batch_size"], cfg["seq_len"] + 1
    ranges = R.modality_ranges(cfg)
    image_lo, image_hi = ranges["image"][0]
    text_lo, text_hi = ranges["text"][-1]
    rows = []
    for _ in range(B):
        row, image = [], bool(torch.randint(0, 2, (1,), generator=generator))
        while len(row) < S1:
            run_length = int(torch.randint(64, 257, (1,), generator=generator))
            lo, hi = (image_lo, image_hi) if image else (text_lo, text_hi)
            row += torch.randint(lo, hi, (run_length,), generator=generator).tolist()
            image = not image
        rows.append(row[:S1])
    return torch.tensor(rows)


def momarun_side(tmp, desc, steps):
    path = os.path.join(tmp, "model.json")
    with open(path, "w") as f:
        json.dump(desc, f)
    artifact = os.path.join(tmp, "artifact")
    start = time.perf_counter()
    run(MOMAC, path, "-o", artifact)
    compile_s = time.perf_counter() - start
    report = json.loads(run(MOMAC, path, "--report", "--json"))
    stats = run(MOMAC, path, "--stats")
    predicted = float(re.search(r"= ([0-9.]+) MB", stats).group(1)) / 1e3
    data = os.path.join(tmp, "data")
    run(MOMARUN, "corpus", path, "--out", data, "--synthetic", "2000",
        "--image-tokens", "256")
    run_dir = os.path.join(tmp, "run")
    # GNU time reports the peak resident set of the training process.
    result = subprocess.run(
        ["/usr/bin/time", "-f", "peak_kb %M", MOMARUN, "train", artifact,
         "--data", data, "--steps", str(steps + 1), "--out", run_dir],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"momarun train failed:\n{result.stderr}")
    peak_kb = int(result.stderr.rsplit("peak_kb ", 1)[1].split()[0])
    gemms = result.stdout.splitlines()[0]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rates = [json.loads(line)["tokens_per_s"] for line in f][1:]
    return (statistics.median(rates), compile_s, report, path,
            peak_kb * 1024 / 1e9, predicted, gemms)


def eager_side(cfg, steps, autocast=False):
    step = eager_step.EagerStep(cfg, seed=0, autocast=autocast)
    generator = torch.Generator().manual_seed(0)
    batches = [mixed_batch(cfg, generator) for _ in range(steps + 1)]
    times = []
    for tokens in batches:
        start = time.perf_counter()
        step(tokens)
        times.append(time.perf_counter() - start)
    tokens_per_step = cfg["train"]["batch_size"] * cfg["seq_len"]
    return tokens_per_step / statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="bench-tiny,small90")
    parser.add_argument("--variants", default="",
                        help="comma-separated; default: every variant of each preset")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="train.precision values to run (the eager step bf16 "
                             "under torch.autocast)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    args = parser.parse_args()
    torch.set_num_threads(2)
    gemm = {"fp32": gemm_gflops(), "bf16": gemm_gflops(dtype=torch.bfloat16)}
    print(f"CPU: {cpu_model()}; torch's OpenBLAS runs its {openblas_corename()} kernels")
    print(f"plain GEMM (torch.matmul 1024^3, 2 threads): fp32 {gemm['fp32']:.1f}, "
          f"bf16 {gemm['bf16']:.1f} GFLOP/s")
    print("environment: " + " ".join(f"{k}={v}" for k, v in TUNED_ENV.items()))
    announced = set()
    for preset in args.presets.split(","):
        variants = args.variants.split(",") if args.variants else DEFAULT_VARIANTS[preset]
        print(f"\n{preset} ({args.steps} timed steps per side; eager bf16 is autocast; "
              f"of GEMM: of the plain GEMM of the row's precision)")
        header = (f"{'variant':22} {'prec':>5} {'momarun':>9} {'eager':>9} {'ratio':>6} "
                  f"{'vs dense':>11} {'of GEMM':>13} {'peak RSS':>13} {'compile':>8}")
        print(header)
        print(f"{'':22} {'':>5} {'tok/s':>9} {'tok/s':>9} {'':>6} "
              f"{'ours/eager':>11} {'ours/eager':>13} {'GB got/pred':>13} {'s':>8}")
        print("-" * len(header))
        dense = {}
        for variant in variants:
            for precision in args.precisions.split(","):
                desc = describe(preset, variant)
                desc["train"]["precision"] = precision
                with tempfile.TemporaryDirectory() as tmp:
                    ours, compile_s, report, path, peak, predicted, gemms = \
                        momarun_side(tmp, desc, args.steps)
                    if gemms not in announced:
                        print(f"  ({gemms})")
                        announced.add(gemms)
                    # The eager model keeps fp32 parameters; bf16 is autocast.
                    fp32 = R.load_config(path)
                    fp32["train"]["precision"] = "fp32"
                    theirs = eager_side(fp32, args.steps,
                                        autocast=precision == "bf16")
                # Training FLOPs of a token, averaged over the modalities'
                # paths (the report's "dense" row is the all-dense equivalent).
                paths = report["train_flops_per_token"]
                flops = statistics.mean(v for k, v in paths.items() if k != "dense") \
                    if len(paths) > 1 else paths["dense"]
                if variant == "dense":
                    dense[precision] = (ours, theirs)
                base = dense.get(precision)
                relative = (f"{ours / base[0]:.2f}/{theirs / base[1]:.2f}"
                            if base else "-")
                fraction = (f"{ours * flops / 1e9 / gemm[precision]:.1%}/"
                            f"{theirs * flops / 1e9 / gemm[precision]:.1%}")
                print(f"{variant:22} {precision:>5} {ours:9.0f} {theirs:9.0f} "
                      f"{ours / theirs:6.2f} {relative:>11} {fraction:>13} "
                      f"{f'{peak:.2f}/{predicted:.2f}':>13} {compile_s:8.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
