#!/usr/bin/python3
"""Command line for the PyTorch reference (moma_reference.py), mirroring momarun.

  reference.py init   MODEL.json --seed N -o W.safetensors
  reference.py tokens MODEL.json --batch B --seed N -o T.bin
  reference.py grad   MODEL.json --weights W.safetensors --tokens T.bin --out O.safetensors
  reference.py train  MODEL.json --weights W.safetensors --tokens T.bin --steps N --out OUT.safetensors

`grad` writes exactly `loss`, `loss.<modality>` (F32, shape []) and `grad.<name>`
(F32) for every parameter, with noise-free routing (MODEL_SPEC section 8).
`train` runs N steps over consecutive batches of train.batch_size * micro_batches
(* --ranks) rows of the token file, cycling over the rows, and writes the final
parameters to OUT (plus optimizer moments with --save-optim), the per-step losses
to OUT's stem + ".losses.json" and momarun-style metrics to ".metrics.jsonl".
Computation is in float64 unless --dtype float32. Errors exit with status 1 and
one line on stderr. Run with /usr/bin/python3 (it has PyTorch).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moma_reference as R  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def load_weights(cfg, path):
    tensors = R.read_safetensors(path)
    R.check_params(cfg, tensors)
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{path}: {name} is not a floating tensor")
    return tensors


def cmd_init(args):
    cfg = R.load_config(args.model)
    params = R.init_params(cfg, args.seed, torch.float32)
    R.write_safetensors(args.o, params, {"step": "0", "data_position": "0"})


def cmd_tokens(args):
    cfg = R.load_config(args.model)
    if args.batch < 1:
        raise ValueError("--batch must be >= 1")
    R.write_tokens(args.o, R.random_tokens(cfg, args.batch, args.seed))


def cmd_grad(args):
    cfg = R.load_config(args.model)
    params = load_weights(cfg, args.weights)
    tokens = R.read_tokens(cfg, args.tokens)
    out = R.grad(cfg, params, tokens, DTYPES[args.dtype])
    R.write_safetensors(args.out, {n: t.to(torch.float32) for n, t in out.items()})


def cmd_train(args):
    cfg = R.load_config(args.model)
    dtype = DTYPES[args.dtype]
    params = {n: t.to(dtype) for n, t in load_weights(cfg, args.weights).items()}
    tokens = R.read_tokens(cfg, args.tokens)
    train = cfg["train"]
    B, M = int(train["batch_size"]), int(train["micro_batches"]) * args.ranks
    gumbel = None
    if args.gumbel_seed is not None:
        gumbel = torch.Generator().manual_seed(args.gumbel_seed)
    state = R.new_optimizer_state(params)
    position = 0  # sequences consumed
    metrics = []
    for t in range(1, args.steps + 1):
        micro = []
        for _ in range(M):
            rows = [(position + i) % tokens.shape[0] for i in range(B)]
            micro.append(tokens[rows])
            position += B
        m = R.train_step(cfg, params, micro, state, t, dtype, gumbel)
        metrics.append(m)
        if args.verbose:
            print(json.dumps(m), flush=True)
    out = {n: p.to(torch.float32) for n, p in params.items()}
    if args.save_optim:
        for n in state["m"]:
            out["optim.m." + n] = state["m"][n].to(torch.float32)
            out["optim.v." + n] = state["v"][n].to(torch.float32)
    R.write_safetensors(args.out, out, {"step": str(args.steps), "data_position": str(position)})
    stem = os.path.splitext(args.out)[0]
    with open(stem + ".losses.json", "w") as f:
        json.dump([m["loss"] for m in metrics], f)
    with open(stem + ".metrics.jsonl", "w") as f:
        for m in metrics:
            f.write(json.dumps(m) + "\n")


def parse(argv):
    ap = argparse.ArgumentParser(prog="reference.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write section-2 initial weights")
    p.add_argument("model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", required=True)
    p.set_defaults(run=cmd_init)

    p = sub.add_parser("tokens", help="write random mixed-modal int32 tokens [B, S+1]")
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", required=True)
    p.set_defaults(run=cmd_tokens)

    p = sub.add_parser("grad", help="loss and gradients of one batch (section 8)")
    p.add_argument("model")
    p.add_argument("--weights", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    p.set_defaults(run=cmd_grad)

    p = sub.add_parser("train", help="N AdamW steps (section 7)")
    p.add_argument("model")
    p.add_argument("--weights", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ranks", type=int, default=1,
                   help="R ranks behave as R * micro_batches micro-batches (section 8)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    p.add_argument("--gumbel-seed", type=int, default=None,
                   help="enable Gumbel router noise (moe.gumbel) with this seed; off by default")
    p.add_argument("--save-optim", action="store_true",
                   help="also write optim.m.<name> / optim.v.<name>")
    p.add_argument("-v", "--verbose", action="store_true", help="print metrics per step")
    p.set_defaults(run=cmd_train)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    try:
        args.run(args)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        print(f"reference.py {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
