"""The benchmark models (standard library only): the presets of bench/run.py
and the GPU bundle (scripts/gpu-bundle.sh), each a model description built
from a shape preset and the "moe"/"mod" sections of an example variant."""
import copy
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = {"batch_size": 8, "total_steps": 1000, "lr": 1e-4, "min_lr": 1e-5,
         "warmup_steps": 10, "weight_decay": 0.1}

PRESETS = {
    # Issue 7's bench-tiny: 2,048 tokens per step.
    "bench-tiny": {
        "d_model": 128, "n_layers": 4, "n_heads": 4, "ffn_hidden": 344,
        "vocab_size": 4096, "seq_len": 256, "norm": "swin", "qk_norm": True,
        "modalities": [{"name": "text"},
                       {"name": "image", "token_ranges": [[4, 2052]]}],
        "train": dict(TRAIN, batch_size=8),
    },
    # The paper's 90M shape at seq_len 512, batch 4 (2,048 tokens per step),
    # the default Chameleon modality layout.
    "small90": {
        "d_model": 512, "n_layers": 8, "n_heads": 8, "ffn_hidden": 1368,
        "vocab_size": 65536, "seq_len": 512,
        "train": dict(TRAIN, batch_size=4),
    },
}

# Variant -> (example whose "moe"/"mod" sections it takes, layers override per preset).
VARIANTS = {
    "dense": ("tiny/dense.json", {}),
    "moe_1t1i": ("tiny/moe_1t1i.json", {}),
    "moe_4t4i": ("tiny/moe_4t4i.json", {}),
    "mod_moe_4t4i": ("tiny/mod_moe_4t4i.json", {}),
    # FLOP-matched to dense: MoD skips 3/4 of the tokens in every other layer.
    "mod_moe_4t4i_matched": ("tiny/mod_moe_4t4i.json",
                             {"bench-tiny": 7, "small90": 14}),
}


def describe(preset, variant):
    """The description of `variant` at the shape of `preset`."""
    desc = copy.deepcopy(PRESETS[preset])
    example, layers = VARIANTS[variant]
    with open(os.path.join(ROOT, "examples", "models", example)) as f:
        source = json.load(f)
    for key in ("moe", "mod"):
        if key in source:
            desc[key] = source[key]
    if preset in layers:
        desc["n_layers"] = layers[preset]
    desc["name"] = f"{preset}-{variant}"
    return desc


def paper_model(size, variant, n_layers=None, batch_size=1):
    """examples/models/<size>/<variant>.json (the paper's shapes, seq_len
    4096), with `batch_size` sequences a step and, for a model that does not
    fit one GPU, fewer layers (named in its name)."""
    with open(os.path.join(ROOT, "examples", "models", size, variant + ".json")) as f:
        desc = json.load(f)
    desc["train"] = dict(desc.get("train", {}), batch_size=batch_size)
    if n_layers is not None:
        desc["n_layers"] = n_layers
        desc["name"] = f"{desc['name']}-{n_layers}l"
    return desc
