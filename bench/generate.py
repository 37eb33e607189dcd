#!/usr/bin/python3
"""Generation speed of momarun against an eager PyTorch KV-cache decoder, side by side.

For each preset: compiles the preset's mod_moe_4t4i model with auxiliary
routers, draws its weights (`momarun init`; the auxiliary routers scaled so
that they pass about half of the tokens, as trained ones do), and runs
train.batch_size prompts of seq_len / 2 tokens, then --max-new tokens each:

  * momarun generate (@prefill: the prompts in one call, then @decode_step),
  * momarun generate --prompt-by-token (the prompts one position per call),
  * bench/eager_decode.py (PyTorch 1.13: the prompts in one forward pass,
    then one batched decode call per token against [B, S] caches),

greedy, and prints prompt and decode tokens/s of each and their ratios. The
greedy tokens of momarun and of the eager decoder are compared (they agree
unless an auxiliary score lands within rounding of 0.5). Timings are the
best of --repeats runs. The process environment is bench/run.py's tuned one.

  bench/generate.py [--presets bench-tiny,small90] [--max-new 32] [--precision fp32]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import TUNED_ENV  # noqa: E402  (re-executes with the tuned environment)

import torch  # noqa: E402

import eager_decode  # noqa: E402
from presets import describe  # noqa: E402
from run import MOMAC, MOMARUN, cpu_model, openblas_corename, run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test", "e2e"))
import moma_reference as R  # noqa: E402

SPEED = re.compile(r"prompts (\d+) tokens in ([0-9.]+) s .*; decoded (\d+) tokens in "
                   r"([0-9.]+) s")


def momarun_generate(artifact, weights, prompts_path, max_new, *extra):
    """(new tokens per prompt, prompt tok/s, decode tok/s, GEMM line)."""
    result = subprocess.run([MOMARUN, "generate", artifact, "--weights", weights,
                             "--prompt", prompts_path, "--max-new", str(max_new),
                             "--temperature", "0", *extra],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"momarun generate failed:\n{result.stderr}")
    prompt_tokens, prompt_s, decoded, decode_s = SPEED.search(result.stderr).groups()
    tokens = [[int(t) for t in line.split()] for line in result.stdout.splitlines()]
    return (tokens, int(prompt_tokens) / float(prompt_s),
            int(decoded) / float(decode_s), result.stderr.splitlines()[0])


def eager_generate(cfg, params, prompts, max_new, autocast):
    """(new tokens per prompt, prompt tok/s, decode tok/s)."""
    decoder = eager_decode.EagerDecoder(cfg, params, autocast=autocast)
    B, P = prompts.shape
    start = time.perf_counter()
    logits = decoder.prefill(prompts)
    prompt_s = time.perf_counter() - start
    new = [logits.argmax(dim=-1)]
    start = time.perf_counter()
    for step in range(1, max_new):
        logits = decoder.decode(new[-1], P + step - 1)
        new.append(logits.argmax(dim=-1))
    decode_s = time.perf_counter() - start
    tokens = torch.stack(new, dim=1).tolist()
    return tokens, B * P / prompt_s, B * (max_new - 1) / decode_s


def bench_preset(preset, args):
    desc = describe(preset, "mod_moe_4t4i")
    desc["aux_routers"] = True
    desc["train"]["precision"] = args.precision
    desc["name"] = f"{preset}-mod_moe_4t4i_aux"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.json")
        with open(path, "w") as f:
            json.dump(desc, f)
        artifact = os.path.join(tmp, "artifact")
        run(MOMAC, path, "-o", artifact)
        cfg = R.load_config(path)
        # Weights: the reference's init, with aux routers that decide well
        # away from 0.5 (as after training), about half of the tokens each.
        params = R.init_params(cfg, seed=0)
        for name in params:
            if ".aux_router." in name:
                params[name] = params[name] * 100
        weights = os.path.join(tmp, "w.safetensors")
        R.write_safetensors(weights, {k: v.float().contiguous() for k, v in params.items()})
        B, S = cfg["train"]["batch_size"], cfg["seq_len"]
        P = S // 2
        prompts = torch.stack([R.random_tokens(cfg, 1, seed=10 + b)[0, :P]
                               for b in range(B)]).to(torch.int64)
        prompts_path = os.path.join(tmp, "prompts.jsonl")
        with open(prompts_path, "w") as f:
            for row in prompts.tolist():
                f.write(json.dumps({"tokens": row}) + "\n")
        best = lambda runs: (runs[0][0], max(r[1] for r in runs), max(r[2] for r in runs))
        batched = [momarun_generate(artifact, weights, prompts_path, args.max_new)
                   for _ in range(args.repeats)]
        gemms = batched[0][3]
        batched = best(batched)
        by_token = best([momarun_generate(artifact, weights, prompts_path, args.max_new,
                                          "--prompt-by-token")
                         for _ in range(args.repeats)])
        fp32 = {k: v.float() for k, v in params.items()}
        eager = best([eager_generate(cfg, fp32, prompts, args.max_new,
                                     autocast=args.precision == "bf16")
                      for _ in range(args.repeats)])
    agree = sum(a == b for x, y in zip(batched[0], eager[0]) for a, b in zip(x, y))
    print(f"\n{preset} mod_moe_4t4i + aux routers, {args.precision}: {B} prompts of "
          f"{P} tokens, {args.max_new} new tokens each ({gemms})")
    print(f"{'':28} {'prompt tok/s':>13} {'decode tok/s':>13}")
    print(f"{'momarun (@prefill)':28} {batched[1]:13.0f} {batched[2]:13.0f}")
    print(f"{'momarun --prompt-by-token':28} {by_token[1]:13.0f} {by_token[2]:13.0f}")
    print(f"{'eager PyTorch (KV cache)':28} {eager[1]:13.0f} {eager[2]:13.0f}")
    print(f"prefill / by token: {batched[1] / by_token[1]:.1f}x; prefill / eager: "
          f"{batched[1] / eager[1]:.2f}x; decode / eager: {batched[2] / eager[2]:.2f}x; "
          f"greedy tokens equal to eager's: {agree}/{B * args.max_new}; "
          f"by token equals @prefill: {by_token[0] == batched[0]}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="bench-tiny,small90")
    parser.add_argument("--max-new", type=int, default=32)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"CPU: {cpu_model()}; torch's OpenBLAS runs its {openblas_corename()} kernels")
    print("environment: " + " ".join(f"{k}={v}" for k, v in TUNED_ENV.items()))
    for preset in args.presets.split(","):
        bench_preset(preset, args)


if __name__ == "__main__":
    main()
