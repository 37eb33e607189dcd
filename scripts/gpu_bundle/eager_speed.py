"""Tokens/s of the project's efficient eager PyTorch step (bench/eager_step.py)
on one model, for the GPU bundle's speed table: fp32, or bf16 under
torch.autocast, eagerly or under torch.compile. Prints one JSON line.

  eager_speed.py --config MODEL.json --steps N [--device cuda] [--autocast] [--compile]
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "eager"))

import torch  # noqa: E402

import eager_step  # noqa: E402
import moma_reference as R  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--autocast", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    cfg = R.load_config(args.config)
    cfg["train"]["precision"] = "fp32"  # bf16 is autocast's
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    step = eager_step.EagerStep(cfg, seed=0, device=args.device,
                                autocast=args.autocast, compile=args.compile)
    batch = cfg["train"]["batch_size"]
    times = []
    for i in range(args.steps + 1):
        tokens = torch.as_tensor(R.random_tokens(cfg, batch, seed=100 + i))
        if args.device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = step(tokens)  # float(): waits for the step
        times.append(time.perf_counter() - started)
    tokens_per_step = batch * cfg["seq_len"]
    print(json.dumps({"tokens_per_s": tokens_per_step / statistics.median(times[1:]),
                      "first_step_s": times[0], "steps": args.steps, "loss": loss,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
