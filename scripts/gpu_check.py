"""The checks of scripts/gpu-check.sh that need a GPU (standard library only).

1. `momarun grad` of each tiny variant on the GPU against the CPU artifact:
   every gradient within 1e-4 of its tensor's largest entry (TF32 off).
2. 20 training steps on the GPU: the loss is finite and falls, and the
   training state went up to the GPU once (and down once, to checkpoint).
3. A sharded (--fsdp) CUDA artifact trains on one rank with NCCL, with
   the losses of the unsharded one.
4. Training tokens/s on bench-tiny, small90 and a 435M-class moe_4t4i at
   seq_len 4096, with the fraction of the GPU's fp32 and bf16 peak.
"""

import json
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build-gpu"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")
# H200 SXM dense peaks: fp32 (CUDA cores) and bf16 (tensor cores).
PEAK_FP32 = 67e12
PEAK_BF16 = 989e12
TIME_BUDGET_S = 7 * 60
# GPU_CHECK_TARGET=cpu runs every step with CPU artifacts in place of CUDA
# ones: a dry run of this script on a machine without a GPU.
TARGET = os.environ.get("GPU_CHECK_TARGET", "cuda")
START = time.time()


def run(*args, env=None, timeout=600):
    try:
        result = subprocess.run([str(a) for a in args], capture_output=True,
                                text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(" ".join(map(str, args)) +
                           f" failed:\ntimed out after {timeout} s")
    if result.returncode != 0:
        raise RuntimeError(" ".join(map(str, args)) + " failed:\n" +
                           result.stdout[-2000:] + result.stderr[-2000:])
    return result.stdout


def read_safetensors(path):
    with open(path, "rb") as f:
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        count = (end - begin) // 4
        code = {"F32": "f", "I32": "i"}[info["dtype"]]
        tensors[name] = struct.unpack(f"<{count}{code}", data[begin:end])
    return tensors


def compare_grads(cpu_path, gpu_path):
    """The worst max|gpu - cpu| / max|cpu| over the tensors, and its name."""
    cpu, gpu = read_safetensors(cpu_path), read_safetensors(gpu_path)
    worst, where = 0.0, ""
    for name, expected in cpu.items():
        actual = gpu[name]
        scale = max(max(abs(x) for x in expected), 1e-30)
        error = max(abs(a - e) for a, e in zip(actual, expected)) / scale
        if error > worst:
            worst, where = error, name
    return worst, where


def write_tokens(path, config, batch):
    vocab, seq = config["vocab_size"], config["seq_len"]
    rng = random.Random(7)
    ids = [rng.randrange(vocab) for _ in range(batch * (seq + 1))]
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{len(ids)}i", *ids))


def artifact_config(artifact):
    with open(os.path.join(artifact, "model.json")) as f:
        desc = json.load(f)
    desc.setdefault("vocab_size", 65536)
    return desc


def grad_check(tmp, variant):
    model = os.path.join(ROOT, "examples", "models", "tiny", variant + ".json")
    cpu, gpu = os.path.join(tmp, variant + ".cpu"), os.path.join(tmp, variant + ".cuda")
    run(MOMAC, model, "-o", cpu)
    started = time.time()
    run(MOMAC, model, "--target=" + TARGET, "-o", gpu)
    compile_s = time.time() - started
    weights = os.path.join(tmp, variant + ".w.safetensors")
    run(MOMARUN, "init", cpu, "-o", weights, "--seed", "3")
    with open(os.path.join(cpu, "manifest.json")) as f:
        manifest = json.load(f)
    tokens = os.path.join(tmp, variant + ".tokens.bin")
    write_tokens(tokens, {"vocab_size": manifest["vocab_size"],
                          "seq_len": manifest["seq_len"]}, 3)
    outputs = {}
    for name, artifact in (("cpu", cpu), ("gpu", gpu)):
        outputs[name] = os.path.join(tmp, f"{variant}.{name}.grad.safetensors")
        run(MOMARUN, "grad", artifact, "--weights", weights, "--tokens", tokens,
            "--out", outputs[name])
    error, where = compare_grads(outputs["cpu"], outputs["gpu"])
    return {"check": f"grad {variant} (B=3)", "result": "ok" if error <= 1e-4 else "FAIL",
            "detail": f"max rel. error {error:.1e} ({where}); cuda compile {compile_s:.0f} s"}


def train_check(tmp):
    art = os.path.join(tmp, "moe_4t4i.cuda")
    data = os.path.join(tmp, "corpus")
    run(MOMARUN, "corpus", os.path.join(ROOT, "examples", "models", "tiny", "moe_4t4i.json"),
        "--out", data, "--synthetic", "400")
    out = os.path.join(tmp, "train20")
    result = subprocess.run([MOMARUN, "train", art, "--data", data, "--steps", "20",
                             "--out", out], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError("momarun train failed:\n" + result.stderr[-2000:])
    losses = [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl"))
              if '"loss"' in line]
    ok = len(losses) == 20 and all(l is not None for l in losses) and losses[-1] < losses[0]
    detail = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no metrics"
    # A CUDA artifact's state stays on the GPU: it goes up once and comes
    # down once, for the one checkpoint (momarun's last line counts it).
    copies = re.search(r"(\d+) uploads \(([0-9.]+) MB\), (\d+) downloads", result.stderr)
    if TARGET == "cuda":
        if not copies or copies.group(1) != copies.group(3):
            ok = False
        detail += (f"; state copies: {copies.group(1)} up ({copies.group(2)} MB), "
                   f"{copies.group(3)} down" if copies else "; no copy count")
    return {"check": "train tiny moe_4t4i, 20 steps", "result": "ok" if ok else "FAIL",
            "detail": detail}


def fsdp_check(tmp):
    # One rank: the gathers and reduce-scatters are NCCL calls on the step's
    # stream over a communicator of one; the losses are the unsharded ones.
    model = os.path.join(ROOT, "examples", "models", "tiny", "moe_4t4i.json")
    sharded = os.path.join(tmp, "moe_4t4i.fsdp")
    run(MOMAC, model, "--fsdp", "--target=" + TARGET, "-o", sharded)
    data = os.path.join(tmp, "corpus")
    if not os.path.exists(data + ".idx"):
        run(MOMARUN, "corpus", model, "--out", data, "--synthetic", "400")
    curves = {}
    for name, art in (("plain", os.path.join(tmp, "moe_4t4i.cuda")), ("fsdp", sharded)):
        out = os.path.join(tmp, "fsdp-check-" + name)
        result = subprocess.run([MOMARUN, "train", art, "--data", data, "--steps", "3",
                                 "--out", out], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"momarun train ({name}) failed:\n" + result.stderr[-2000:])
        curves[name] = [json.loads(line)["loss"]
                        for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line]
        if name == "fsdp":
            over = re.search(r"collectives ran over (\S+)", result.stderr)
    error = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(curves["plain"], curves["fsdp"]))
    backend = over.group(1) if over else "?"
    ok = len(curves["fsdp"]) == 3 and error <= 1e-5 and (TARGET != "cuda" or backend == "nccl")
    return {"check": "fsdp tiny moe_4t4i, 1 rank, 3 steps", "result": "ok" if ok else "FAIL",
            "detail": f"collectives over {backend}; losses vs unsharded: max rel. {error:.1e}"}


def timing(tmp, name, desc, steps):
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump(desc, f)
    art = os.path.join(tmp, name + ".art")
    started = time.time()
    run(MOMAC, path, "--target=" + TARGET, "-o", art)
    compile_s = time.time() - started
    report = json.loads(run(MOMAC, path, "--report", "--json"))
    flops = statistics.mean(report["train_flops_per_token"][k]
                            for k in report["train_flops_per_token"] if k != "dense")
    data = os.path.join(tmp, name + ".data")
    run(MOMARUN, "corpus", path, "--out", data, "--synthetic", str(8 * steps))
    out = os.path.join(tmp, name + ".run")
    # Attention runs one block per sequence (no flash attention yet): at
    # seq_len 4096 a step may take long; the table says so instead of the
    # check running out of time.
    run(MOMARUN, "train", art, "--data", data, "--steps", str(steps), "--out", out,
        timeout=150)
    rates = [json.loads(line)["tokens_per_s"] for line in open(os.path.join(out, "metrics.jsonl"))
             if '"tokens_per_s"' in line]
    rate = statistics.median(rates[1:] or rates)  # the first step warms up
    precision = desc.get("train", {}).get("precision", "fp32")
    peak = PEAK_BF16 if precision == "bf16" else PEAK_FP32
    return {"check": f"time {name} ({precision})", "result": f"{rate:,.0f} tok/s",
            "detail": f"{rate * flops / peak:.1%} of the {precision} peak; "
                      f"compile {compile_s:.0f} s"}


def preset(base, **extra):
    desc = dict(base)
    desc.update(extra)
    return desc


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("dense", "moe_1t1i", "moe_4t4i", "mod_moe_4t4i_aux"):
            try:
                rows.append(grad_check(tmp, variant))
            except RuntimeError as error:
                rows.append({"check": f"grad {variant}", "result": "FAIL",
                             "detail": str(error).splitlines()[-1][:160]})
        try:
            rows.append(train_check(tmp))
        except RuntimeError as error:
            rows.append({"check": "train 20 steps", "result": "FAIL",
                         "detail": str(error).splitlines()[-1][:160]})
        try:
            rows.append(fsdp_check(tmp))
        except RuntimeError as error:
            rows.append({"check": "fsdp 1 rank", "result": "FAIL",
                         "detail": str(error).splitlines()[-1][:160]})
        with open(os.path.join(ROOT, "examples", "models", "tiny", "moe_4t4i.json")) as f:
            moe = json.load(f)["moe"]
        tiny = {"d_model": 128, "n_layers": 4, "n_heads": 4, "ffn_hidden": 344,
                "vocab_size": 4096, "seq_len": 256, "norm": "swin", "qk_norm": True,
                "modalities": [{"name": "text"},
                               {"name": "image", "token_ranges": [[4, 2052]]}],
                "moe": moe, "train": {"batch_size": 8}}
        small90 = {"d_model": 512, "n_layers": 8, "n_heads": 8, "ffn_hidden": 1368,
                   "vocab_size": 65536, "seq_len": 512, "moe": moe,
                   "train": {"batch_size": 4}}
        with open(os.path.join(ROOT, "examples", "models", "435m", "moe_4t4i.json")) as f:
            big = json.load(f)
        big["train"] = {"batch_size": 1}
        steps = int(os.environ.get("GPU_CHECK_STEPS", "10"))
        runs = [("bench-tiny-moe_4t4i", preset(tiny, name="bench-tiny-moe_4t4i"), steps),
                ("small90-moe_4t4i", preset(small90, name="small90-moe_4t4i"), steps),
                ("small90-moe_4t4i-bf16", preset(small90, name="small90-moe_4t4i-bf16",
                 train={"batch_size": 4, "precision": "bf16"}), steps)]
        if not os.environ.get("GPU_CHECK_SKIP_435M"):
            runs.append(("435m-moe_4t4i-s4096", big, max(2, steps // 2)))
        for name, desc, steps in runs:
            if time.time() - START > TIME_BUDGET_S:
                rows.append({"check": f"time {name}", "result": "skipped",
                             "detail": "over the time budget"})
                continue
            try:
                rows.append(timing(tmp, name, desc, steps))
            except RuntimeError as error:
                rows.append({"check": f"time {name}", "result": "FAIL",
                             "detail": str(error).splitlines()[-1][:160]})
    width = max(len(r["check"]) for r in rows)
    print("\n| check | result | detail |\n|---|---|---|")
    for r in rows:
        print(f"| {r['check']:<{width}} | {r['result']} | {r['detail']} |")
    print(f"\ngpu-check: {time.time() - START:.0f} s")
    return 1 if any(r["result"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
