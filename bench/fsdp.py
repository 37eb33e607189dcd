#!/usr/bin/python3
"""FSDP on one machine: 2 ranks (one core and one thread each, mpirun -np 2
--bind-to core) against 1 rank with 2 threads, on the same global batch.

Both sides run momarun on the same model (bench/run.py's presets): one rank
with train.micro_batches 2, and two ranks of an artifact compiled with
`momac --fsdp`, one micro-batch each (MODEL_SPEC section 8: the same
sequences, the same losses). It prints tokens/s of each side (medians over
the timed steps, the first step left out), their ratio, and the fraction of
the sharded step that rank 0 spent blocked in collectives (gathers it waited
for and reduce-scatters), with the slowest rank's compute time. Run in the
tuned environment of bench/run.py:

  bench/fsdp.py                                  # small90: dense, moe_4t4i
  bench/fsdp.py --presets bench-tiny --variants moe_4t4i --steps 6
"""
import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (re-executes in the tuned environment)


def train(args, env, run_dir):
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n"
                           f"{result.stderr}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f][1:]


def side_by_side(tmp, preset, variant, steps):
    desc = bench.describe(preset, variant)
    paths = {}
    for name, micro in (("one", 2), ("two", 1)):
        d = copy.deepcopy(desc)
        d["train"]["micro_batches"] = micro
        paths[name] = os.path.join(tmp, f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(d, f)
    bench.run(bench.MOMAC, paths["one"], "-o", os.path.join(tmp, "one"))
    bench.run(bench.MOMAC, paths["two"], "--fsdp", "-o", os.path.join(tmp, "two"))
    data = os.path.join(tmp, "data")
    bench.run(bench.MOMARUN, "corpus", paths["one"], "--out", data,
              "--synthetic", "2000", "--image-tokens", "256")
    common = ["--data", data, "--steps", str(steps + 1)]
    one = train([bench.MOMARUN, "train", os.path.join(tmp, "one"), *common,
                 "--out", os.path.join(tmp, "run-one")],
                dict(os.environ, OMP_NUM_THREADS="2"),
                os.path.join(tmp, "run-one"))
    two = train([shutil.which("mpirun"), "--oversubscribe", "--bind-to", "core",
                 "-np", "2", bench.MOMARUN, "train", os.path.join(tmp, "two"),
                 *common, "--out", os.path.join(tmp, "run-two")],
                dict(os.environ, OMP_NUM_THREADS="1",
                     OMPI_ALLOW_RUN_AS_ROOT="1",
                     OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"),
                os.path.join(tmp, "run-two"))
    report = json.loads(bench.run(bench.MOMAC, paths["one"], "--report",
                                  "--json"))
    # Training FLOPs per token, the mean over the modalities' paths.
    per_modality = [v for k, v in report["train_flops_per_token"].items()
                    if k != "dense"]
    flops_per_token = sum(per_modality) / len(per_modality)
    tokens = 2 * desc["train"]["batch_size"] * desc["seq_len"]
    wait = statistics.median(m["comm_wait_s"] * m["tokens_per_s"] / tokens
                             for m in two)
    losses_equal = all(abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"])
                       for a, b in zip(one, two))
    return (statistics.median(m["tokens_per_s"] for m in one),
            statistics.median(m["tokens_per_s"] for m in two), wait,
            statistics.median(m["slowest_rank_s"] for m in two), losses_equal,
            flops_per_token)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small90")
    parser.add_argument("--variants", default="dense,moe_4t4i")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(f"environment: {' '.join(f'{k}={v}' for k, v in bench.TUNED_ENV.items() if k != 'OMP_NUM_THREADS')}")
    gemm = bench.gemm_gflops()
    print(f"plain fp32 GEMM (torch.matmul 1024^3, 2 threads): {gemm:.1f} GFLOP/s")
    for preset in args.presets.split(","):
        print(f"\n{preset} ({args.steps} timed steps per side, "
              f"{2 * bench.PRESETS[preset]['train']['batch_size']} sequences "
              f"per step)")
        print(f"{'variant':<22}{'1 rank x 2 thr':>16}{'2 ranks x 1 thr':>17}"
              f"{'ratio':>7}{'comm wait':>11}{'slowest rank':>14}{'same loss':>11}")
        print(f"{'':<22}{'tok/s':>16}{'tok/s':>17}{'':>7}"
              f"{'of step':>11}{'compute s':>14}")
        for variant in args.variants.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                one, two, wait, slowest, same, flops = side_by_side(
                    tmp, preset, variant, args.steps)
            of_gemm = f"{one * flops / 1e9 / gemm:.1%}/{two * flops / 1e9 / gemm:.1%}"
            print(f"{variant:<22}{one:>16.0f}{two:>17.0f}{two / one:>7.2f}"
                  f"{wait:>10.1%}{slowest:>14.3f}{'yes' if same else 'NO':>11}"
                  f"{of_gemm:>16}", flush=True)


if __name__ == "__main__":
    main()
