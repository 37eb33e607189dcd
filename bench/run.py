#!/usr/bin/python3
"""Training throughput of momarun against the PyTorch reference, same run.

For each model: compiles it with momac, times `momarun train` steps, times the
reference's training step (eager PyTorch, 2 threads, float32: forward,
autograd backward, AdamW) on the same batch size, and prints tokens/s for
both and their ratio. Also prints the step's achieved GFLOP/s (momac --report
FLOPs per token x tokens/s) against a plain fp32 GEMM measured here.
Then, for the CPU BLAS choice, momac-bench-blas times OpenBLAS against
oneDNN on the GEMM shapes of these steps, with 1 thread (how the artifact
calls BLAS, inside its own OpenMP loops) and with 2.

Run with Debian's python3 (PyTorch 1.13), after scripts/build.sh:
  GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \\
  OMP_WAIT_POLICY=PASSIVE bench/run.py [--steps N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
import moma_reference as R  # noqa: E402

BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")
BENCH_BLAS = os.path.join(BUILD, "bin", "momac-bench-blas")

# (label, example, overrides): the tiny 4t4i example, and the 90M 4t4i model
# with a short sequence so that a step takes seconds on 2 cores.
MODELS = [
    ("tiny moe_4t4i", "tiny/moe_4t4i.json", {}),
    ("90M moe_4t4i, S=128, B=2", "90m/moe_4t4i.json",
     {"seq_len": 128, "vocab_size": 16384,
      "modalities": [{"name": "text"},
                     {"name": "image", "token_ranges": [[4, 8196]]}],
      "train": {"batch_size": 2, "lr": 1e-4}}),
]


def run(*args, env=None):
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          env=env).stdout


def gemm_gflops(size=1024, repeats=10):
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def momarun_tokens_per_s(tmp, label, example, overrides, steps):
    with open(os.path.join(ROOT, "examples", "models", example)) as f:
        desc = json.load(f)
    train = desc.get("train", {})
    train.update(overrides.get("train", {}))
    desc.update({k: v for k, v in overrides.items() if k != "train"})
    desc["train"] = train
    path = os.path.join(tmp, "model.json")
    with open(path, "w") as f:
        json.dump(desc, f)
    artifact = os.path.join(tmp, "artifact")
    run(MOMAC, path, "-o", artifact)
    report = json.loads(run(MOMAC, path, "--report", "--json"))
    flops = np.mean([v for k, v in report["train_flops_per_token"].items()
                     if k != "dense"])
    data = os.path.join(tmp, "data")
    run(MOMARUN, "corpus", path, "--out", data, "--synthetic", "400")
    run_dir = os.path.join(tmp, "run")
    run(MOMARUN, "train", artifact, "--data", data, "--steps", str(steps),
        "--out", run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rates = [json.loads(line)["tokens_per_s"] for line in f]
    return float(np.median(rates[1:] if len(rates) > 1 else rates)), flops, path


def reference_tokens_per_s(path, steps):
    cfg = R.load_config(path)
    params = R.init_params(cfg, seed=0)
    state = R.new_optimizer_state(params)
    batch, seq = cfg["train"]["batch_size"], cfg["seq_len"]
    tokens = torch.randint(0, cfg["vocab_size"], (batch, seq + 1))
    times = []
    for t in range(1, steps + 1):
        start = time.perf_counter()
        R.train_step(cfg, params, [tokens], state, t, dtype=torch.float32)
        times.append(time.perf_counter() - start)
    step = float(np.median(times[1:] if len(times) > 1 else times))
    return batch * seq / step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    gemm = gemm_gflops()
    print(f"fp32 GEMM (torch.matmul 1024^3, 2 threads): {gemm:.1f} GFLOP/s\n")
    header = (f"{'model':28} {'momarun tok/s':>14} {'reference tok/s':>16} "
              f"{'ratio':>7} {'step GFLOP/s':>13} {'of GEMM':>8}")
    print(header)
    print("-" * len(header))
    for label, example, overrides in MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            ours, flops, path = momarun_tokens_per_s(tmp, label, example,
                                                     overrides, args.steps)
            theirs = reference_tokens_per_s(path, max(3, args.steps // 2))
        achieved = ours * flops / 1e9
        print(f"{label:28} {ours:14.0f} {theirs:16.0f} {ours / theirs:7.2f} "
              f"{achieved:13.2f} {achieved / gemm:8.1%}", flush=True)
    if not os.path.exists(BENCH_BLAS):
        print(f"\n{BENCH_BLAS} not built (needs libdnnl-dev): no BLAS table")
        return
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads,
                   OMP_NUM_THREADS=threads)
        print(f"\nOpenBLAS against oneDNN, {threads} thread(s):")
        print(run(BENCH_BLAS, env=env), end="", flush=True)


if __name__ == "__main__":
    main()
