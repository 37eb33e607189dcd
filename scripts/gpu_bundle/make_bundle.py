#!/usr/bin/python3
"""Builds the GPU bundle (scripts/gpu-bundle.sh DIR): everything a GPU
machine without LLVM, MPI, BLAS or a package registry needs to check momac's
CUDA target in one command, `DIR/run.sh`, and the answers to check it
against, computed here by the CPU artifacts from the same inputs.

  DIR/run.sh                  the one command there (writes $OUT/gpu-report.*)
  DIR/bundle.json             what is inside, every check and its expectation
  DIR/bin/                    momarun (no LLVM or MPI library), the CUDA
                              runtime's unit tests, the cuBLAS benchmark
  DIR/check/                  gpu_report.py and the eager PyTorch step
  DIR/payload.tar.xz          packed (44 MB of artifacts become 5), unpacked
                              there by gpu_report.py:
    art/NAME.PRECISION/       CUDA artifacts (model.so, manifest, model.json)
    inputs/ expected/         tokens, a corpus; the CPU's gradients (each
                              tensor's summary, tensors.py), losses and
                              tolerances; the weights are drawn there by
                              momarun init and checked by their hash

--emulated builds the same bundle with cuda-emulated artifacts, which
`run.sh --emulated` runs on this CPU (ctest gpu-bundle-emulated): a broken
bundle or script shows here, before any GPU time is spent. --models tiny
keeps to the tiny models (the tests); the default adds small90, 435M and
1.4B-class models.

Needs the build (momac, momarun) and Debian's python3 with PyTorch (the
reference computes the routers' top-k margins).
"""
import argparse
import copy
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import presets  # noqa: E402
import tensors as T  # noqa: E402

LIMIT_BYTES = 48 << 20
# Shared libraries a binary or artifact in the bundle may need from the GPU
# machine's image: the C and C++ runtimes, the driver and CUDA's libraries.
ALLOWED_LIBRARIES = {
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6",
    "libdl.so.2", "libpthread.so.0", "librt.so.1", "libstdc++.so.6",
    "libgcc_s.so.1", "libcuda.so.1", "libcudart.so.13", "libcublas.so.13",
    "libcublasLt.so.13", "libnccl.so.2"}
SEED = 3
# fp32 gradients on the GPU against the CPU's: within this of each tensor's
# largest entry (TF32 off). bf16: at least this, or twice what rounding to
# bf16 changes in the CPU's own run (make_expected).
FP32_TOLERANCE = 1e-4
# A top-k whose boundary scores differ by less than this (relative) can
# choose other tokens on the GPU, where the router's fp32 sums round
# differently: a mismatch there is reported as a flip, not a kernel error.
FLIP_MARGIN = 1e-4
TRAIN_STEPS = 20


def log(message):
    print(f"gpu-bundle: {message}", flush=True)


def run(*args, env=None):
    result = subprocess.run([str(a) for a in args], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"gpu-bundle: {' '.join(map(str, args))} failed:\n"
                         f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def tiny(variant):
    with open(os.path.join(ROOT, "examples", "models", "tiny", variant + ".json")) as f:
        desc = json.load(f)
    desc["train"]["batch_size"] = 3  # the checks take B = 1 and 3
    desc["name"] = "tiny-" + variant
    return desc


def check_models(scope):
    """(name, description) of the models whose gradients are compared."""
    models = [("tiny-dense", tiny("dense")), ("tiny-moe_4t4i", tiny("moe_4t4i")),
              ("tiny-mod_moe_4t4i_aux", tiny("mod_moe_4t4i_aux"))]
    if scope == "all":
        models += [("small90-moe_4t4i", presets.describe("small90", "moe_4t4i")),
                   ("small90-mod_moe_4t4i", presets.describe("small90", "mod_moe_4t4i"))]
    return models


def speed_models(scope):
    """(name, description, precisions, GPU GiB it needs at least) of the
    models timed against PyTorch. The 1.4B class: the whole 24-layer
    moe_4t4i (106 GiB of training state) on an H200; on an H100 (80 GB) its
    width at 12 layers (53 GiB); mod_moe_4t4i at its width (2304) and 8 of
    its 32 layers (44 GiB; the whole model's 177 GiB fits no single GPU)."""
    if scope != "all":
        return [("tiny-moe_4t4i", None, ["fp32"], 0)]
    return [
        ("small90-moe_4t4i", None, ["fp32", "bf16"], 0),
        ("small90-mod_moe_4t4i", None, ["bf16"], 0),
        ("435m-moe_4t4i", presets.paper_model("435m", "moe_4t4i"), ["bf16"], 0),
        ("435m-mod_moe_4t4i", presets.paper_model("435m", "mod_moe_4t4i"), ["bf16"], 0),
        ("1.4b-moe_4t4i", presets.paper_model("1.4b", "moe_4t4i"), ["bf16"], 120),
        ("1.4b-moe_4t4i-12l", presets.paper_model("1.4b", "moe_4t4i", n_layers=12),
         ["bf16"], 0),
        ("1.4b-mod_moe_4t4i-8l", presets.paper_model("1.4b", "mod_moe_4t4i", n_layers=8),
         ["bf16"], 0),
    ]


class Builder:
    def __init__(self, out, build, target, work):
        self.out, self.build, self.target, self.work = out, build, target, work
        self.momac = os.path.join(build, "bin", "momac")
        self.momarun = os.path.join(build, "bin", "momarun")
        self.descriptions = {}

    def description(self, name, desc, precision):
        """Writes the description of `name` in `precision`; returns its path."""
        desc = copy.deepcopy(desc)
        desc.setdefault("train", {})["precision"] = precision
        path = os.path.join(self.work, f"{name}.{precision}.json")
        with open(path, "w") as f:
            json.dump(desc, f, indent=1)
        return path

    def compile(self, name, desc, precision, target, fsdp=False):
        """An artifact of `name` in `precision` for `target`: in the bundle
        (art/) for the bundle's target, in the work folder for the CPU."""
        path = self.description(name, desc, precision)
        suffix = f"{precision}{'.fsdp' if fsdp else ''}"
        if target == "cpu":
            artifact = os.path.join(self.work, "cpu", f"{name}.{suffix}")
        else:
            artifact = os.path.join(self.out, "art", f"{name}.{suffix}")
        if os.path.exists(os.path.join(artifact, "manifest.json")):
            return artifact
        started = time.time()
        run(self.momac, path, "-o", artifact, "--target=" + target,
            *(["--fsdp"] if fsdp else []))
        # The PTX is embedded in model.so (as is the cubin); the loose copy
        # only costs bundle space.
        for extra in ("kernels.ptx",):
            if os.path.exists(os.path.join(artifact, extra)):
                os.remove(os.path.join(artifact, extra))
        log(f"compiled {name} ({suffix}) for {target} in {time.time() - started:.0f} s")
        return artifact


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def router_margins(desc_path, weights, tokens_path):
    """The smallest relative gap at each top-k boundary of the reference's
    forward pass (float64): {router: margin}, for expert choice within each
    group and MoD selection. A gap below FLIP_MARGIN means fp32 rounding may
    choose differently."""
    sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
    import torch
    import moma_reference as R
    cfg = R.load_config(desc_path)
    params = {k: v.double() for k, v in R.read_safetensors(weights).items()}
    tokens = R.read_tokens(cfg, tokens_path)
    margins = {}
    where = {"router": "?"}
    original_topk, original_ffn, original_mod = R.top_k_lower_index, R.ffn, R.mod_block

    def top_k(scores, k):
        if 0 < k < scores.numel():
            ordered = torch.sort(scores, descending=True).values
            gap = float(ordered[k - 1] - ordered[k])
            relative = gap / max(abs(float(ordered[k - 1])), 1e-30)
            key = where["router"]
            margins[key] = min(margins.get(key, float("inf")), relative)
        return original_topk(scores, k)

    def ffn(cfg, params, layer, *args, **kwargs):
        where["router"] = f"layers.{layer}.moe"
        return original_ffn(cfg, params, layer, *args, **kwargs)

    def mod_block(cfg, params, layer, *args, **kwargs):
        where["router"] = f"layers.{layer}.mod"
        return original_mod(cfg, params, layer, *args, **kwargs)

    R.top_k_lower_index, R.ffn, R.mod_block = top_k, ffn, mod_block
    try:
        with torch.no_grad():
            R.forward(cfg, params, tokens)
    finally:
        R.top_k_lower_index, R.ffn, R.mod_block = original_topk, original_ffn, original_mod
    return margins


def make_numerics(builder, scope):
    """Inputs and the CPU's gradients for every check model, precision and
    batch size; returns the bundle's "numerics" entries."""
    sys.path.insert(0, os.path.join(ROOT, "test", "e2e"))
    import moma_reference as R
    entries = []
    for name, desc in check_models(scope):
        cpu = {p: builder.compile(name, desc, p, "cpu") for p in ("fp32", "bf16")}
        for p in ("fp32", "bf16"):
            builder.compile(name, desc, p, builder.target)
        # The weights do not travel: momarun init draws the same ones there
        # (the same binary), checked by their hash.
        weights = os.path.join(builder.work, f"{name}.weights.safetensors")
        run(builder.momarun, "init", cpu["fp32"], "-o", weights, "--seed", SEED)
        weights_entry = {"init_seed": SEED, "sha256": sha256(weights)}
        cfg = R.load_config(builder.description(name, desc, "fp32"))
        for batch in (1, 3):
            tokens = os.path.join(builder.out, "inputs", f"{name}.b{batch}.tokens.bin")
            R.write_tokens(tokens, R.random_tokens(cfg, batch, seed=SEED + batch))
            grads = {}
            for p in ("fp32", "bf16"):
                grads[p] = os.path.join(builder.work, f"{name}.{p}.b{batch}.grad.safetensors")
                run(builder.momarun, "grad", cpu[p], "--weights", weights,
                    "--tokens", tokens, "--out", grads[p])
            margins = router_margins(builder.description(name, desc, "fp32"), weights, tokens)
            fp32, bf16 = T.read(grads["fp32"]), T.read(grads["bf16"])
            for p in ("fp32", "bf16"):
                if p == "fp32":
                    tolerance = FP32_TOLERANCE
                else:
                    # What rounding the GEMM operands to bf16 changes in the
                    # CPU's run bounds what the GPU's bf16 run may differ by.
                    tolerance = {tensor: max(FP32_TOLERANCE, 2 * T.relative_error(
                        bf16[tensor][1], fp32[tensor][1])) for tensor in fp32}
                # Whole gradients would not fit the bundle (tiny
                # mod_moe_4t4i_aux alone has 19 MB of them): each tensor
                # travels as its summary (tensors.py).
                expected = os.path.join(builder.out, "expected",
                                        f"{name}.{p}.b{batch}.grad.json")
                with open(expected, "w") as f:
                    json.dump(T.summarize(T.read(grads[p])), f)
                entries.append({
                    "model": name, "precision": p, "batch": batch,
                    "artifact": f"art/{name}.{p}", "weights": weights_entry,
                    "tokens": os.path.relpath(tokens, builder.out),
                    "expected": os.path.relpath(expected, builder.out),
                    "tolerance": tolerance, "margins": margins,
                    "mod": "mod" in desc})
            log(f"expected gradients of {name}, B={batch}; smallest top-k margin "
                f"{min(margins.values(), default=float('inf')):.1e}")
    return entries


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_training(builder):
    """20 training steps of tiny moe_4t4i from the bundle's weights and
    corpus (fp32 and bf16), and 3 steps of its sharded (--fsdp) step on one
    rank, as the CPU runs them."""
    name, desc = "tiny-moe_4t4i", tiny("moe_4t4i")
    weights = os.path.join(builder.work, f"{name}.weights.safetensors")
    weights_entry = {"init_seed": SEED, "sha256": sha256(weights)}
    corpus = os.path.join(builder.out, "inputs", "corpus")
    run(builder.momarun, "corpus", builder.description(name, desc, "fp32"),
        "--out", corpus, "--synthetic", "200", "--seed", "1")
    training = []
    for precision in ("fp32", "bf16"):
        cpu = builder.compile(name, desc, precision, "cpu")
        builder.compile(name, desc, precision, builder.target)
        out = os.path.join(builder.work, f"train.{precision}")
        run(builder.momarun, "train", cpu, "--data", corpus, "--steps", TRAIN_STEPS,
            "--init", weights, "--out", out)
        metrics = read_metrics(out)
        training.append({"model": name, "precision": precision,
                         "artifact": f"art/{name}.{precision}", "weights": weights_entry,
                         "corpus": "inputs/corpus", "steps": TRAIN_STEPS,
                         "losses": [m["loss"] for m in metrics],
                         "grad_norms": [m["grad_norm"] for m in metrics]})
    cpu = builder.compile(name, desc, "fp32", "cpu", fsdp=True)
    builder.compile(name, desc, "fp32", builder.target, fsdp=True)
    out = os.path.join(builder.work, "train.fsdp")
    run(builder.momarun, "train", cpu, "--fsdp", "--data", corpus, "--steps", 3,
        "--init", weights, "--out", out)
    sharded = [m["loss"] for m in read_metrics(out)]
    plain = training[0]["losses"][:3]
    worst = max(abs(a - b) / abs(b) for a, b in zip(sharded, plain))
    if worst > 1e-5:
        raise SystemExit(f"gpu-bundle: the CPU's sharded step on one rank differs "
                         f"from its plain step by {worst:.1e}; fix that first")
    fsdp = {"model": name, "artifact": f"art/{name}.fp32.fsdp",
            "plain_artifact": f"art/{name}.fp32", "weights": weights_entry,
            "corpus": "inputs/corpus", "steps": 3, "losses": sharded}
    return training, fsdp


def train_flops_per_token(builder, path):
    report = json.loads(run(builder.momac, path, "--report", "--json"))
    paths = report["train_flops_per_token"]
    values = [v for k, v in paths.items() if k != "dense"] or [paths["dense"]]
    return statistics.mean(values), report


def make_speed(builder, scope):
    entries = []
    for name, desc, precisions, min_gib in speed_models(scope):
        if desc is None:
            desc = dict(check_models(scope))[name]
        for precision in precisions:
            artifact = builder.compile(name, desc, precision, builder.target)
            path = builder.description(name, desc, precision)
            flops, report = train_flops_per_token(builder, path)
            shutil.copyfile(path, os.path.join(builder.out, "inputs", f"{name}.{precision}.json"))
            entries.append({
                "model": name, "precision": precision,
                "artifact": os.path.relpath(artifact, builder.out),
                "description": f"inputs/{name}.{precision}.json",
                "train_flops_per_token": flops,
                "parameters": report["parameters"]["total"],
                "state_bytes": report["memory_bytes"]["total"],
                "min_gpu_gib": min_gib})
    return entries


def copy_binaries(builder):
    os.makedirs(os.path.join(builder.out, "bin"))
    for binary in ("momarun", "momac-cuda-unittests", "momac-bench-cublas"):
        source = os.path.join(builder.build, "bin", binary)
        if not os.path.exists(source):
            if binary == "momarun":
                raise SystemExit(f"gpu-bundle: {source} is missing; run scripts/build.sh")
            log(f"{binary} is not built (a build without CUDA): left out")
            continue
        target = os.path.join(builder.out, "bin", binary)
        shutil.copy2(source, target)
        # Symbols for debugging stay in the build; the dynamic ones remain.
        subprocess.run(["strip", "--strip-unneeded", target], check=False)
    check = os.path.join(builder.out, "check")
    os.makedirs(os.path.join(check, "eager"))
    for script in ("gpu_report.py", "tensors.py", "eager_speed.py"):
        shutil.copy2(os.path.join(HERE, script), check)
    shutil.copy2(os.path.join(HERE, "run.sh"), builder.out)
    for source in ("bench/eager_step.py", "bench/presets.py", "test/e2e/moma_reference.py"):
        shutil.copy2(os.path.join(ROOT, source), os.path.join(check, "eager"))


def elf_files(directory):
    for path in sorted(glob.glob(os.path.join(directory, "bin", "*")) +
                       glob.glob(os.path.join(directory, "art", "*", "model.so"))):
        with open(path, "rb") as f:
            if f.read(4) == b"\x7fELF":
                yield path


PACKED = ("art", "inputs", "expected")


def pack(directory):
    """Moves art/, inputs/ and expected/ into payload.tar.xz."""
    with tarfile.open(os.path.join(directory, "payload.tar.xz"), "w:xz") as tar:
        for sub in PACKED:
            tar.add(os.path.join(directory, sub), arcname=sub)
    for sub in PACKED:
        shutil.rmtree(os.path.join(directory, sub))


def bundle_size(directory):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(directory) for f in files)


def check_closure(directory, allowed=ALLOWED_LIBRARIES):
    """Problems (empty: none) with the bundle's closure: every shared library
    that a binary or artifact needs is in the bundle or on the allow-list,
    every symbol resolves (ldd -r), and the bundle fits its size limit. A
    packed bundle is checked unpacked, its size packed."""
    payload = os.path.join(directory, "payload.tar.xz")
    if os.path.exists(payload):
        with tempfile.TemporaryDirectory() as unpacked:
            for sub in ("bin",):
                shutil.copytree(os.path.join(directory, sub), os.path.join(unpacked, sub))
            with tarfile.open(payload) as tar:
                tar.extractall(unpacked)
            problems, _ = check_closure(unpacked, allowed)
        problems = [p for p in problems if "MiB, more than" not in p]
        size = bundle_size(directory)
        if size > LIMIT_BYTES:
            problems.append(f"the bundle holds {size / 2**20:.1f} MiB, more than "
                            f"{LIMIT_BYTES / 2**20:.0f} MiB")
        return problems, size
    problems = []
    bundled = {os.path.basename(p) for p in glob.glob(os.path.join(directory, "lib", "*"))}
    for path in elf_files(directory):
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            run("readelf", "-d", path))
        for library in needed:
            if library not in bundled and library not in allowed:
                problems.append(f"{os.path.relpath(path, directory)} needs {library}, "
                                "which is neither in the bundle nor on the allow-list")
        resolved = subprocess.run(["ldd", "-r", path], capture_output=True, text=True)
        for line in (resolved.stdout + resolved.stderr).splitlines():
            if "undefined symbol" in line or "not found" in line:
                problems.append(f"{os.path.relpath(path, directory)}: {line.strip()}")
    size = bundle_size(directory)
    if size > LIMIT_BYTES:
        problems.append(f"the bundle holds {size / 2**20:.1f} MiB, more than "
                        f"{LIMIT_BYTES / 2**20:.0f} MiB")
    return problems, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--build", default=os.environ.get(
        "MOMAC_BUILD_DIR", os.path.join(ROOT, "build")))
    parser.add_argument("--emulated", action="store_true",
                        help="cuda-emulated artifacts, for run.sh --emulated on this CPU")
    parser.add_argument("--models", choices=("tiny", "all"), default="all")
    parser.add_argument("--check-closure", action="store_true",
                        help="only check an existing bundle's closure and size")
    args = parser.parse_args()
    out = os.path.abspath(args.directory)
    if args.check_closure:
        problems, size = check_closure(out)
        for problem in problems:
            print(f"gpu-bundle: {problem}")
        print(f"gpu-bundle: {out}: {size / 2**20:.1f} MiB, "
              f"{'closed' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if os.path.exists(out):
        shutil.rmtree(out)
    for sub in ("art", "inputs", "expected"):
        os.makedirs(os.path.join(out, sub))
    target = "cuda-emulated" if args.emulated else "cuda"
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        builder = Builder(out, os.path.abspath(args.build), target, work)
        copy_binaries(builder)
        numerics = make_numerics(builder, args.models)
        training, fsdp = make_training(builder)
        speed = make_speed(builder, args.models)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    bundle = {"target": target, "models": args.models, "commit": commit,
              "built": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "built_on": cpu, "flip_margin": FLIP_MARGIN,
              "numerics": numerics, "training": training, "fsdp": fsdp,
              "speed": speed}
    with open(os.path.join(out, "bundle.json"), "w") as f:
        json.dump(bundle, f, indent=1)
    # The libraries before packing; the size after it (what travels).
    problems = ([p for p in check_closure(out)[0] if "MiB, more than" not in p]
                if target == "cuda" else [])
    started_packing = time.time()
    pack(out)
    size = bundle_size(out)
    if target == "cuda" and size > LIMIT_BYTES:
        problems.append(f"the bundle holds {size / 2**20:.1f} MiB, more than "
                        f"{LIMIT_BYTES / 2**20:.0f} MiB")
    log(f"packed art/, inputs/ and expected/ in {time.time() - started_packing:.0f} s")
    for problem in problems:
        log(problem)
    log(f"{out}: {size / 2**20:.1f} MiB, {len(numerics)} gradient checks, "
        f"{len(speed)} timed models, {target} artifacts, in {time.time() - started:.0f} s"
        + ("" if not problems else f"; {len(problems)} closure problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
