#!/usr/bin/env python3
"""Writes examples/models/<size>/<variant>.json for every MoMa paper variant.

Sizes are the paper's FLOPs tiers (MODEL_SPEC section 1) plus `tiny`, which
trains in seconds on a CPU. Run it after changing a layout; the JSON files are
committed so that the examples can be read without running anything.
"""
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def ffn_hidden(d):
    # The paper's FFN width is 4d; SwiGLU's three matrices make that 8d/3,
    # rounded to the nearest multiple of 8 (MODEL_SPEC section 1).
    return int(round(8 * d / 3 / 8)) * 8


# name: (dense layout, MoD layout) as (n_layers, d_model, n_heads)
PAPER_SIZES = {
    "90m": ((8, 512, 8), (14, 512, 8)),
    "435m": ((24, 1024, 16), (40, 1024, 16)),
    "1.4b": ((24, 2048, 16), (32, 2304, 18)),
}

TINY = {
    "vocab_size": 512,
    # Byte-level text owns 0..255 (the default); image codes 256..511.
    "modalities": [{"name": "text"},
                   {"name": "image", "token_ranges": [[256, 512]]}],
    "seq_len": 128,
    "train": {"batch_size": 8, "total_steps": 300, "lr": 3e-3,
              "min_lr": 3e-4, "warmup_steps": 20, "weight_decay": 0.1},
}
TINY_DENSE = (2, 128, 4)
TINY_MOD = (4, 128, 4)

MOD = {"every": 2, "offset": 0, "capacity": 0.25}


def groups(text, image):
    return [{"name": "text", "modalities": ["text"], "experts": text},
            {"name": "image", "modalities": ["image"], "experts": image}]


# variant: (uses MoD, moe object or None)
VARIANTS = {
    "dense": (False, None),
    "mod_dense": (True, None),
    "moe_8x": (False, {"groups": [{"name": "all",
                                   "modalities": ["text", "image"],
                                   "experts": 8}]}),
    "moe_1t1i": (False, {"groups": groups(1, 1)}),
    "moe_4t4i": (False, {"groups": groups(4, 4)}),
    "moe_7t1i": (False, {"groups": groups(7, 1)}),
    "mod_moe_1t1i": (True, {"groups": groups(1, 1)}),
    "mod_moe_4t4i": (True, {"groups": groups(4, 4)}),
}


def model(name, layout, mod, moe, extra):
    layers, d, heads = layout
    desc = {"name": name}
    desc.update({k: v for k, v in extra.items() if k in ("vocab_size", "modalities")})
    desc.update({"d_model": d, "n_layers": layers, "n_heads": heads,
                 "ffn_hidden": ffn_hidden(d),
                 "seq_len": extra.get("seq_len", 4096)})
    if moe is not None:
        desc["moe"] = moe
    if mod:
        desc["mod"] = MOD
    if "train" in extra:
        desc["train"] = extra["train"]
    return desc


def write(size, variant, desc):
    folder = os.path.join(HERE, size)
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(desc, indent=2)
    # Keep lists of scalars ([256, 512], ["text"]) on one line.
    scalar_list = re.compile(r"\[\s*([^\[\]{}]*?)\s*\]")
    while True:
        collapsed = scalar_list.sub(
            lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
            text)
        collapsed = re.sub(r"\[\s*(\[[^{}]*?\])\s*\]", r"[\1]", collapsed)
        if collapsed == text:
            break
        text = collapsed
    with open(os.path.join(folder, variant + ".json"), "w") as f:
        f.write(text + "\n")


def main():
    for size, (dense_layout, mod_layout) in PAPER_SIZES.items():
        for variant, (mod, moe) in VARIANTS.items():
            layout = mod_layout if mod else dense_layout
            write(size, variant,
                  model(f"{variant}_{size}", layout, mod, moe, {}))
    for variant, (mod, moe) in VARIANTS.items():
        layout = TINY_MOD if mod else TINY_DENSE
        write("tiny", variant,
              model(f"{variant}_tiny", layout, mod, moe, TINY))
    # Auxiliary routers for causal inference, and Gumbel noise for the
    # upcycled stage, on the deepest tiny variant.
    aux = model("mod_moe_4t4i_aux_tiny", TINY_MOD, True,
                {"groups": groups(4, 4), "gumbel": True}, TINY)
    aux["aux_routers"] = True
    write("tiny", "mod_moe_4t4i_aux", aux)


if __name__ == "__main__":
    main()
