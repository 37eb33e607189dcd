"""PyTorch reference implementation of shared/MODEL_SPEC.md (v1), for tests only.

It favours being obviously the spec over being fast: every routing decision is
explicit, and each section of the spec has one function here. It runs in any
floating dtype; tests use float64 so that it is a ground truth for the fp32
compiled model (MODEL_SPEC section 8: the contract holds where top-k
boundaries are separated by more than fp32 rounding).

Conventions:
  * `params` is a dict name -> tensor with the names and shapes of section 2.
  * `tokens` is an int64 (or int32) tensor [B, S+1].
  * Flat token index n = b*S + s (section 3).

Run with /usr/bin/python3 (PyTorch 1.13); nothing here needs the C++ build.
"""
import copy
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Section 1: model description
# ---------------------------------------------------------------------------

TRAIN_DEFAULTS = {
    "batch_size": 8,
    "micro_batches": 1,
    "total_steps": 1000,
    "lr": 1e-4,
    "min_lr": 1e-6,
    "warmup_steps": 4000,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-5,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "precision": "fp32",
    "seed": 0,
}

# The Chameleon layout: image owns the 8192 codebook ids 4..8195, text the rest.
DEFAULT_IMAGE_RANGE = [4, 8196]


def fill_defaults(desc):
    """Returns a deep copy of a model description with every section-1 default.

    Validation is deliberately minimal (the C++ side owns it); only what the
    reference needs to be well defined is checked.
    """
    cfg = copy.deepcopy(desc)
    cfg.setdefault("vocab_size", 65536)
    cfg.setdefault("norm", "swin")
    cfg.setdefault("norm_eps", 1e-5)
    cfg.setdefault("qk_norm", True)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("z_loss", 1e-5)
    cfg.setdefault("aux_routers", False)
    V = cfg["vocab_size"]
    if "modalities" not in cfg:
        if V < DEFAULT_IMAGE_RANGE[1]:
            raise ValueError(
                "modalities: the default Chameleon layout needs vocab_size >= 8196")
        cfg["modalities"] = [{"name": "text"},
                             {"name": "image", "token_ranges": [list(DEFAULT_IMAGE_RANGE)]}]
    for m in cfg["modalities"]:
        m.setdefault("token_ranges", None)
        if m["token_ranges"] == []:  # no ranges listed: the default modality
            m["token_ranges"] = None
    if cfg.get("moe") is not None:
        moe = cfg["moe"]
        moe.setdefault("every", 1)
        moe.setdefault("capacity_factor", 1.0)
        moe.setdefault("gumbel", False)
    else:
        cfg["moe"] = None
    if cfg.get("mod") is not None:
        mod = cfg["mod"]
        mod.setdefault("every", 2)
        mod.setdefault("offset", 0)
        mod.setdefault("capacity", 0.25)
    else:
        cfg["mod"] = None
    train = dict(TRAIN_DEFAULTS)
    train.update(cfg.get("train") or {})
    cfg["train"] = train

    d, H = cfg["d_model"], cfg["n_heads"]
    if d % H != 0 or (d // H) % 2 != 0:
        raise ValueError("d_model / n_heads must be an even integer (RoPE)")
    if cfg["aux_routers"] and d % 2 != 0:
        raise ValueError("aux_routers needs an even d_model")
    # Precompute the id -> modality table (raises on gaps / overlaps).
    modality_of_id(cfg)
    if cfg["moe"] is not None:
        group_of_id(cfg)
    return cfg


def load_config(path):
    with open(path) as f:
        return fill_defaults(json.load(f))


def modality_names(cfg):
    return [m["name"] for m in cfg["modalities"]]


def modality_ranges(cfg):
    """{modality: [[lo, hi), ...]} with the catch-all modality's ranges made explicit."""
    table = modality_of_id(cfg)
    out = {}
    for index, name in enumerate(modality_names(cfg)):
        ranges = []
        owned = (table == index)
        start = None
        for i, flag in enumerate(owned.tolist() + [False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                ranges.append([start, i])
                start = None
        out[name] = ranges
    return out


def modality_of_id(cfg):
    """int64 tensor [V]: the index (into cfg["modalities"]) of each token id's modality.

    A modality without token_ranges owns every id no other range covers.
    """
    cached = cfg.get("_modality_of_id")
    if cached is not None:
        return cached
    V = cfg["vocab_size"]
    table = torch.full((V,), -1, dtype=torch.int64)
    catch_all = None
    for index, m in enumerate(cfg["modalities"]):
        if m["token_ranges"] is None:
            if catch_all is not None:
                raise ValueError("at most one modality may omit token_ranges")
            catch_all = index
            continue
        for lo, hi in m["token_ranges"]:
            if not (0 <= lo < hi <= V):
                raise ValueError(f"modality {m['name']}: bad range [{lo}, {hi})")
            if (table[lo:hi] != -1).any():
                raise ValueError(f"modality {m['name']}: overlapping range [{lo}, {hi})")
            table[lo:hi] = index
    if catch_all is not None:
        table[table == -1] = catch_all
    if (table == -1).any():
        raise ValueError("the modalities' token_ranges do not cover [0, vocab_size)")
    cfg["_modality_of_id"] = table
    return table


def group_of_id(cfg):
    """int64 tensor [V]: the index (into cfg["moe"]["groups"]) of each token id's group."""
    cached = cfg.get("_group_of_id")
    if cached is not None:
        return cached
    names = modality_names(cfg)
    group_of_modality = [-1] * len(names)
    for g, group in enumerate(cfg["moe"]["groups"]):
        for m in group["modalities"]:
            i = names.index(m)
            if group_of_modality[i] != -1:
                raise ValueError(f"modality {m} is in two groups")
            group_of_modality[i] = g
    if -1 in group_of_modality:
        raise ValueError("every modality must be in exactly one group")
    table = torch.tensor(group_of_modality, dtype=torch.int64)[modality_of_id(cfg)]
    cfg["_group_of_id"] = table
    return table


def is_moe_layer(cfg, layer):
    return cfg["moe"] is not None and layer % cfg["moe"]["every"] == 0


def is_mod_layer(cfg, layer):
    return cfg["mod"] is not None and layer % cfg["mod"]["every"] == cfg["mod"]["offset"]


def expert_capacity(capacity_factor, n, experts):
    """k = min(n, ceil((c * n) / E)) in IEEE double, in exactly that order (section 4)."""
    return min(n, math.ceil((float(capacity_factor) * n) / experts))


def mod_capacity(capacity, n):
    """k_d = ceil(c_d * N) in IEEE double (section 5)."""
    return min(n, math.ceil(float(capacity) * n))


# ---------------------------------------------------------------------------
# Section 2: parameters
# ---------------------------------------------------------------------------

# Section 7: weight decay applies exactly to names with one of these suffixes.
WEIGHT_DECAY_SUFFIXES = (".wq.weight", ".wk.weight", ".wv.weight", ".wo.weight",
                         ".w1", ".w2", ".w3", ".w1.weight", ".w2.weight", ".w3.weight",
                         "router.weight", "output.weight")


def has_weight_decay(name):
    return name.endswith(WEIGHT_DECAY_SUFFIXES)


def is_aux(name):
    return ".aux_router." in name


def parameter_specs(cfg):
    """[(name, shape, weight_decay, aux)] in the order of section 2."""
    V, d, H = cfg["vocab_size"], cfg["d_model"], cfg["n_heads"]
    hd, f = d // H, cfg["ffn_hidden"]
    names = [("tok_embeddings.weight", (V, d))]
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        for w in ("wq", "wk", "wv", "wo"):
            names.append((p + f"attention.{w}.weight", (d, d)))
        if cfg["qk_norm"]:
            for n in ("q_norm", "k_norm"):
                names.append((p + f"attention.{n}.weight", (H, hd)))
                names.append((p + f"attention.{n}.bias", (H, hd)))
        names.append((p + "attention_norm.weight", (d,)))
        names.append((p + "ffn_norm.weight", (d,)))
        if is_moe_layer(cfg, l):
            for group in cfg["moe"]["groups"]:
                g, E = p + "moe." + group["name"] + ".", group["experts"]
                if E > 1:
                    names.append((g + "router.weight", (E, d)))
                names.append((g + "w1", (E, f, d)))
                names.append((g + "w3", (E, f, d)))
                names.append((g + "w2", (E, d, f)))
                if cfg["aux_routers"] and E > 1:
                    names.append((g + "aux_router.w1.weight", (d // 2, d)))
                    names.append((g + "aux_router.w2.weight", (E, d // 2)))
        else:
            names.append((p + "feed_forward.w1.weight", (f, d)))
            names.append((p + "feed_forward.w3.weight", (f, d)))
            names.append((p + "feed_forward.w2.weight", (d, f)))
        if is_mod_layer(cfg, l):
            names.append((p + "mod.router.weight", (1, d)))
            if cfg["aux_routers"]:
                names.append((p + "mod.aux_router.w1.weight", (d // 2, d)))
                names.append((p + "mod.aux_router.w2.weight", (1, d // 2)))
    names.append(("norm.weight", (d,)))
    names.append(("output.weight", (V, d)))
    return [(n, tuple(s), has_weight_decay(n) and not is_aux(n), is_aux(n))
            for n, s in names]


def init_params(cfg, seed, dtype=torch.float32):
    """Section 2 init: matrices N(0, 0.02), norm weights 1, biases 0."""
    gen = torch.Generator().manual_seed(int(seed))
    params = {}
    for name, shape, _, _ in parameter_specs(cfg):
        if name.endswith("norm.weight"):  # attention_norm, ffn_norm, q/k_norm, norm
            t = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            t = torch.zeros(shape, dtype=dtype)
        else:
            t = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.02).to(dtype)
        params[name] = t
    return params


def upcycle(cfg, source, fresh):
    """Section 7 (upcycling): the parameters of model `cfg` from `source`, the
    parameters of a model with one expert per group (or a dense one). Every
    expert of a group starts as a copy of that group's single FFN (for a dense
    source, of the layer's FFN); expert routers and auxiliary routers are taken
    from `fresh` (a section-2 init of `cfg`: N(0, 0.02)); everything else is
    copied. Raises ValueError where the two models do not correspond."""
    params = {}
    for name, shape, _, _ in parameter_specs(cfg):
        shape = tuple(shape)
        if ".aux_router." in name or (".moe." in name and name.endswith(".router.weight")):
            params[name] = fresh[name].clone()
            continue
        expert = ".moe." in name and name.rsplit(".", 1)[1] in ("w1", "w2", "w3")
        if name in source:
            t = source[name]
            if tuple(t.shape) == shape:
                params[name] = t.clone()
            elif expert and t.shape[0] == 1 and tuple(t.shape[1:]) == shape[1:]:
                params[name] = t.expand(shape).clone()
            else:
                raise ValueError(f"{name}: shape {tuple(t.shape)} does not correspond to {shape}")
        elif expert:
            layer = name.split(".moe.")[0]
            dense = f"{layer}.feed_forward.{name.rsplit('.', 1)[1]}.weight"
            if dense not in source or tuple(source[dense].shape) != shape[1:]:
                raise ValueError(f"{name}: no FFN in the source to start the experts from")
            params[name] = source[dense][None].expand(shape).clone()
        else:
            raise ValueError(f"{name}: not in the source")
    return params


def check_params(cfg, params):
    """Raises ValueError unless params has exactly the section-2 names and shapes."""
    specs = parameter_specs(cfg)
    expected = {n: s for n, s, _, _ in specs}
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise ValueError(f"weights: missing {missing[:5]}, unexpected {extra[:5]}")
    for n, s in expected.items():
        if tuple(params[n].shape) != s:
            raise ValueError(f"weights: {n} has shape {tuple(params[n].shape)}, expected {s}")


# ---------------------------------------------------------------------------
# Section 3: forward pass building blocks
# ---------------------------------------------------------------------------

def round_to_bf16(x):
    """x rounded to bfloat16 (to nearest even), kept in x's dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


class _Bf16OperandMatmul(torch.autograd.Function):
    """a @ b of bf16-rounded operands, products summed in the working dtype;
    its backward pass rounds the output gradient the same way, so each of
    the two gradient GEMMs also takes bf16 operands."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = round_to_bf16(a), round_to_bf16(b)
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad = round_to_bf16(grad)
        return grad @ b.transpose(-1, -2), a.transpose(-1, -2) @ grad


def gemm_of(cfg):
    """The matmul of the model's GEMMs (section 7): plain for fp32; for bf16,
    operands rounded to bf16 with wide accumulation. Routers (MoE, MoD and
    auxiliary) never use it: their logits stay fp32."""
    if cfg["train"].get("precision", "fp32") == "bf16":
        return _Bf16OperandMatmul.apply
    return torch.matmul


def rms_norm(v, weight, eps):
    return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + eps) * weight


def head_layer_norm(x, weight, bias, eps):
    """LayerNorm over the last dim (hd) of x [n, H, hd], biased variance, per-head affine."""
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rope_angles(positions, hd, theta, dtype):
    """cos, sin [n, 1, hd] of phi_j = s * theta^(-2 (j mod hd/2) / hd), in double then cast."""
    half = hd // 2
    inv_freq = torch.tensor([float(theta) ** (-2.0 * (j % half) / hd) for j in range(hd)],
                            dtype=torch.float64)
    phi = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(phi).to(dtype)[:, None, :], torch.sin(phi).to(dtype)[:, None, :]


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def attention_heads(cfg, params, prefix, x, pos):
    """q, k, v [n, H, hd] of attention: projections, q/k LayerNorm, RoPE."""
    n, d = x.shape
    H = cfg["n_heads"]
    hd = d // H
    mm = gemm_of(cfg)
    q = mm(x, params[prefix + "wq.weight"].t()).view(n, H, hd)
    k = mm(x, params[prefix + "wk.weight"].t()).view(n, H, hd)
    v = mm(x, params[prefix + "wv.weight"].t()).view(n, H, hd)
    if cfg["qk_norm"]:
        eps = cfg["norm_eps"]
        q = head_layer_norm(q, params[prefix + "q_norm.weight"], params[prefix + "q_norm.bias"], eps)
        k = head_layer_norm(k, params[prefix + "k_norm.weight"], params[prefix + "k_norm.bias"], eps)
    cos, sin = rope_angles(pos, hd, cfg["rope_theta"], x.dtype)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention(cfg, params, prefix, x, seq, pos):
    """Causal multi-head attention over the tokens given.

    `seq` and `pos` are each token's sequence index and position s. A token
    attends to j iff same sequence and pos[j] <= pos[i]: so MoD subsets attend
    among themselves with their original positions (section 5).
    """
    n, d = x.shape
    hd = d // cfg["n_heads"]
    q, k, v = attention_heads(cfg, params, prefix, x, pos)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [H, n, hd]
    mm = gemm_of(cfg)
    scores = mm(q, k.transpose(1, 2)) / math.sqrt(hd)  # [H, n, n]
    allowed = (seq[:, None] == seq[None, :]) & (pos[None, :] <= pos[:, None])
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = mm(probs, v).transpose(0, 1).reshape(n, d)  # head h in columns h*hd:(h+1)*hd
    return mm(o, params[prefix + "wo.weight"].t())


def swiglu(v, w1, w3, w2, mm=torch.matmul):
    """FFN(v) = w2(silu(w1 v) * (w3 v)) with PyTorch Linear layouts w1, w3 [f, d], w2 [d, f]
    (w1, w3, w2 may be stacked per expert [E, ...] with v [E, k, d])."""
    return mm(F.silu(mm(v, w1.transpose(-1, -2))) * mm(v, w3.transpose(-1, -2)),
              w2.transpose(-1, -2))


# ---------------------------------------------------------------------------
# Section 4: MoMa module
# ---------------------------------------------------------------------------

def top_k_lower_index(scores, k):
    """Indices of the k highest scores of a 1-D tensor, ties to the lower index,
    returned in ascending index order. A stable sort of -score keeps equal scores in
    index order, which is exactly the tie rule."""
    order = torch.sort(-scores, stable=True).indices[:k]
    return torch.sort(order).values


def expert_choice(scores, k):
    """Each expert (column of scores [n, E]) takes its top-k tokens: [E, k] row indices."""
    return torch.stack([top_k_lower_index(scores[:, e], k) for e in range(scores.shape[1])])


def gumbel_noise(shape, generator, dtype):
    """G' - G'' for independent standard Gumbel samples G = -log(-log(U))."""
    def gumbel():
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        u = u.clamp(min=1e-20, max=1.0 - 1e-16)
        return -torch.log(-torch.log(u))
    return (gumbel() - gumbel()).to(dtype)


def router_noise(source, layer, members, shape, dtype):
    """Logit noise for the router of the group whose rows of the module input are
    `members`: drawn from `source` when it is a torch.Generator, or read from it
    when it is a given [n_layers, rows, max experts] tensor (as `momarun grad
    --noise` takes it): row members[i], experts 0..E-1 of layer `layer`."""
    if isinstance(source, torch.Tensor):
        return source[layer][members, :shape[1]].to(dtype)
    return gumbel_noise(shape, source, dtype)


def router_logits(v, weight):
    """v @ weight^T for a router (MoE, MoD and auxiliary): always in the working
    precision, never bf16 (section 7). A separate function so that a
    benchmark running the model under autocast can keep routers in fp32."""
    return v @ weight.t()


def aux_scores(params, prefix, v):
    """Section 6: the auxiliary router at `prefix`, sigmoid(silu(v w1^T) w2^T), [n, E]."""
    hidden = F.silu(router_logits(v, params[prefix + "aux_router.w1.weight"]))
    return torch.sigmoid(router_logits(hidden, params[prefix + "aux_router.w2.weight"]))


def moma(cfg, params, layer, v, ids, gumbel_generator=None, record=None, causal=None,
         aux_inputs=None):
    """The MoMa module of layer `layer` on inputs v [n, d] whose INPUT token ids are
    `ids` [n]. With `causal` (a dict), groups of several experts route by their
    auxiliary routers (section 6) and causal["disagreement.<group prefix>"] gets the
    fraction of (token, expert) decisions where that differs from the batch top-k.
    `aux_inputs` (a list) receives (router, detached input, batch choice) for each
    router with an auxiliary router, what section 6 trains it on."""
    prefix = f"layers.{layer}."
    out = torch.zeros_like(v)
    groups_of_tokens = group_of_id(cfg)[ids]
    c = cfg["moe"]["capacity_factor"]
    for g, group in enumerate(cfg["moe"]["groups"]):
        p = prefix + "moe." + group["name"] + "."
        E = group["experts"]
        members = torch.nonzero(groups_of_tokens == g).flatten()  # I_G, ascending
        n = members.numel()
        if n == 0:
            if record is not None:
                record.append((p, "empty"))
            if causal is not None and E > 1:
                causal["disagreement." + p[:-1]] = 0.0
            continue
        vg = v[members]
        w1, w3, w2 = params[p + "w1"], params[p + "w3"], params[p + "w2"]
        if E == 1:
            # No router and no gate; capacity does not apply.
            yg = swiglu(vg, w1[0], w3[0], w2[0], gemm_of(cfg))
        else:
            z = router_logits(vg, params[p + "router.weight"])  # [n, E]
            if gumbel_generator is not None and cfg["moe"]["gumbel"]:
                # The noisy s is both the selection score and the gate.
                z = z + router_noise(gumbel_generator, layer, members, z.shape, z.dtype)
            s = torch.sigmoid(z)
            k = expert_capacity(c, n, E)
            # The top-k choice carries no gradient; the gates s do.
            chosen = expert_choice(s.detach(), k)  # [E, k] local indices into I_G
            if record is not None:
                record.append((p, members[chosen].clone()))
            if aux_inputs is not None and cfg["aux_routers"]:
                aux_inputs.append((p[:-1], vg.detach(), chosen))
            if causal is not None:
                # A token goes to expert e iff its aux score > 0.5, weighted by s.
                take = aux_scores(params, p, vg) > 0.5  # [n, E]
                batch = torch.zeros_like(take)
                batch[chosen, torch.arange(E)[:, None]] = True
                causal["disagreement." + p[:-1]] = float((take != batch).double().mean())
                yg = torch.zeros_like(vg)
                for e in range(E):
                    rows = torch.nonzero(take[:, e]).flatten()
                    if rows.numel():
                        y = swiglu(vg[rows], w1[e], w3[e], w2[e], gemm_of(cfg))
                        yg = yg.index_add(0, rows, s[rows, e, None] * y)
                out = out.index_add(0, members, yg)
                continue
            # One batched SwiGLU per expert over its k tokens.
            x_e = vg[chosen]  # [E, k, d]
            y_e = swiglu(x_e, w1, w3, w2, gemm_of(cfg))  # [E, k, d]
            gates = s[chosen, torch.arange(E)[:, None]]  # [E, k]: s[chosen[e, j], e]
            contributions = gates[..., None] * y_e
            # Sum over the experts that took each token; untaken tokens stay 0.
            yg = torch.zeros_like(vg).index_add(0, chosen.reshape(-1),
                                                contributions.reshape(-1, vg.shape[1]))
        out = out.index_add(0, members, yg)
    return out


# ---------------------------------------------------------------------------
# Blocks, MoD (section 5), whole model
# ---------------------------------------------------------------------------

def ffn(cfg, params, layer, v, ids, gumbel_generator, record, causal=None, aux_inputs=None):
    prefix = f"layers.{layer}."
    if is_moe_layer(cfg, layer):
        return moma(cfg, params, layer, v, ids, gumbel_generator, record, causal, aux_inputs)
    p = prefix + "feed_forward."
    return swiglu(v, params[p + "w1.weight"], params[p + "w3.weight"], params[p + "w2.weight"],
                  gemm_of(cfg))


def block(cfg, params, layer, x, ids, seq, pos, gumbel_generator=None, record=None,
          causal=None, aux_inputs=None):
    prefix = f"layers.{layer}."
    eps = cfg["norm_eps"]
    attn_norm = params[prefix + "attention_norm.weight"]
    ffn_norm = params[prefix + "ffn_norm.weight"]
    if cfg["norm"] == "swin":
        a = x + rms_norm(attention(cfg, params, prefix + "attention.", x, seq, pos), attn_norm, eps)
        return a + rms_norm(ffn(cfg, params, layer, a, ids, gumbel_generator, record, causal,
                                aux_inputs), ffn_norm, eps)
    if cfg["norm"] == "pre":
        a = x + attention(cfg, params, prefix + "attention.", rms_norm(x, attn_norm, eps), seq, pos)
        return a + ffn(cfg, params, layer, rms_norm(a, ffn_norm, eps), ids, gumbel_generator,
                       record, causal, aux_inputs)
    raise ValueError(f"norm: unknown value {cfg['norm']!r}")


def mod_block(cfg, params, layer, x, ids, seq, pos, gumbel_generator=None, record=None,
              causal=None, aux_inputs=None):
    """Section 5: the block runs on the top ceil(c_d N) tokens by r, merged with weight r."""
    prefix = f"layers.{layer}."
    r = torch.sigmoid(router_logits(x, params[prefix + "mod.router.weight"]))[:, 0]  # [N]
    k_d = mod_capacity(cfg["mod"]["capacity"], x.shape[0])
    selected = top_k_lower_index(r.detach(), k_d)  # ascending flat order
    if aux_inputs is not None and cfg["aux_routers"]:
        aux_inputs.append((prefix + "mod", x.detach(), selected))
    if causal is not None:
        # Section 6: the block runs on the tokens whose aux score > 0.5.
        take = aux_scores(params, prefix + "mod.", x)[:, 0] > 0.5
        batch = torch.zeros_like(take)
        batch[selected] = True
        causal["disagreement." + prefix + "mod"] = float((take != batch).double().mean())
        selected = torch.nonzero(take).flatten()
    if record is not None:
        record.append((prefix + "mod", selected.clone()))
    x_sel = x[selected]
    # Gumbel noise is never applied on MoD routing; the MoMa groups inside the
    # block still follow the model's setting.
    y_sel = block(cfg, params, layer, x_sel, ids[selected], seq[selected], pos[selected],
                  gumbel_generator, record, causal, aux_inputs)
    delta = r[selected][:, None] * (y_sel - x_sel)
    return x.index_add(0, selected, delta)


def forward(cfg, params, tokens, gumbel_generator=None, record=None, details=False,
            causal=None, aux_inputs=None):
    """Section 3-5 and 7: returns (loss, {modality: loss}).

    gumbel_generator: a torch.Generator enables Gumbel router noise (training with
    moe.gumbel only), a [n_layers, B*S, max experts] tensor gives that noise; None is
    the noise-free (eval) routing of the numerical contract.
    record: an optional list that receives every routing decision, in order.
    details: also return a dict with per-token 'ce' [N], 'target_modality' [N], 'logits'.
    """
    tokens = torch.as_tensor(tokens).to(torch.int64)
    B, S1 = tokens.shape
    S = S1 - 1
    if S != cfg["seq_len"]:
        raise ValueError(f"tokens: sequences of {S1} ids, expected seq_len + 1 = {cfg['seq_len'] + 1}")
    ids = tokens[:, :S].reshape(-1)
    targets = tokens[:, 1:].reshape(-1)
    seq = torch.arange(B).repeat_interleave(S)
    pos = torch.arange(S).repeat(B)

    h = params["tok_embeddings.weight"][ids]
    for layer in range(cfg["n_layers"]):
        if is_mod_layer(cfg, layer):
            h = mod_block(cfg, params, layer, h, ids, seq, pos, gumbel_generator, record, causal,
                          aux_inputs)
        else:
            h = block(cfg, params, layer, h, ids, seq, pos, gumbel_generator, record, causal,
                      aux_inputs)
    logits = gemm_of(cfg)(rms_norm(h, params["norm.weight"], cfg["norm_eps"]),
                          params["output.weight"].t())

    lse = torch.logsumexp(logits, dim=-1)
    ce = lse - logits.gather(1, targets[:, None])[:, 0]
    loss = ce.mean() + cfg["z_loss"] * lse.pow(2).mean()

    # Per-modality plain CE; a target's modality is that of the TARGET id.
    target_modality = modality_of_id(cfg)[targets]
    per_modality = {}
    for index, name in enumerate(modality_names(cfg)):
        mask = target_modality == index
        per_modality[name] = ce[mask].mean() if bool(mask.any()) else ce.new_zeros(())
    if details:
        return loss, per_modality, {"ce": ce, "target_modality": target_modality,
                                    "logits": logits}
    return loss, per_modality


def aux_grad(cfg, params, tokens, dtype=torch.float64):
    """Section 6's objective of the auxiliary routers on the batch routing of the
    frozen model: {"aux_loss" (the sum over routers), "bce.<router>" (each router's
    BCE, the mean over its [n, E] decisions; a router that sees no tokens adds 0),
    "grad.<aux parameter>"}."""
    p = {k: v.to(dtype).detach().requires_grad_(is_aux(k)) for k, v in params.items()}
    inputs = []
    with torch.no_grad():
        forward(cfg, p, torch.as_tensor(tokens).long(), aux_inputs=inputs)
    total = torch.zeros((), dtype=dtype)
    out = {}
    for router, v, chosen in inputs:
        scores = aux_scores(p, router + ".", v)
        target = torch.zeros_like(scores)
        if chosen.dim() == 2:
            target[chosen, torch.arange(chosen.shape[0])[:, None]] = 1
        else:
            target[chosen, 0] = 1
        bce = F.binary_cross_entropy(scores, target) if scores.numel() else scores.sum()
        out["bce." + router] = bce.detach()
        total = total + bce
    total.backward()
    out["aux_loss"] = total.detach()
    for name, value in p.items():
        if is_aux(name):
            out["grad." + name] = value.grad if value.grad is not None else torch.zeros_like(value)
    return out


def grad(cfg, params, tokens, dtype=torch.float64, gumbel_generator=None):
    """The numerical contract of section 8: {"loss", "loss.<m>", "grad.<name>"}.

    Computed in `dtype`; aux-router gradients are exactly 0 (they are not in the loss).
    """
    leaves = {n: t.detach().to(dtype).clone().requires_grad_(True) for n, t in params.items()}
    loss, per_modality = forward(cfg, leaves, tokens, gumbel_generator)
    loss.backward()
    out = {"loss": loss.detach()}
    for name, value in per_modality.items():
        out["loss." + name] = value.detach()
    for name, _, _, _ in parameter_specs(cfg):
        g = leaves[name].grad
        out["grad." + name] = torch.zeros_like(leaves[name]).detach() if g is None else g.detach()
    return out


# ---------------------------------------------------------------------------
# Section 7: schedule, clipping, AdamW, micro-batches
# ---------------------------------------------------------------------------

def lr_at(train, t):
    """lr(t) for step t >= 1. W = min(warmup_steps, total_steps), T = total_steps."""
    lr, min_lr = float(train["lr"]), float(train["min_lr"])
    T = int(train["total_steps"])
    W = min(int(train["warmup_steps"]), T)
    if W > 0 and 1 <= t <= W:  # [choice] for W == T, step T is the last warm-up step
        return lr * t / W
    if t < T:
        return lr + (min_lr - lr) * (t - W) / (T - W)
    return min_lr


def new_optimizer_state(params):
    return {"m": {n: torch.zeros_like(p) for n, p in params.items() if not is_aux(n)},
            "v": {n: torch.zeros_like(p) for n, p in params.items() if not is_aux(n)}}


def adamw_step(cfg, params, grads, state, t):
    """One section-7 update of `params` in place. grads: name -> gradient (no prefix).

    Returns {"lr", "grad_norm" (before clipping), "clip_scale"}.
    """
    train = cfg["train"]
    names = [n for n, _, _, aux in parameter_specs(cfg) if not aux]
    grad_norm = math.sqrt(sum(float(grads[n].double().pow(2).sum()) for n in names))
    clip = float(train["grad_clip"])
    scale = min(1.0, clip / (grad_norm + 1e-6)) if clip > 0 else 1.0
    lr = lr_at(train, t)
    b1, b2, eps = float(train["beta1"]), float(train["beta2"]), float(train["eps"])
    wd = float(train["weight_decay"])
    with torch.no_grad():
        for n in names:
            p = params[n]
            g = grads[n].to(p.dtype) * scale
            m = state["m"][n].mul_(b1).add_((1 - b1) * g)
            v = state["v"][n].mul_(b2).add_((1 - b2) * g * g)
            m_hat = m / (1 - b1 ** t)
            v_hat = v / (1 - b2 ** t)
            decay = wd if has_weight_decay(n) else 0.0
            p.sub_(lr * (decay * p + m_hat / (torch.sqrt(v_hat) + eps)))
    return {"lr": lr, "grad_norm": grad_norm, "clip_scale": scale}


def train_step(cfg, params, micro_batches, state, t, dtype=torch.float64, gumbel_generator=None):
    """One step: mean gradient over micro-batches (each routed on its own), clip, AdamW.

    micro_batches: list of token tensors [B, S+1]. Returns the metrics of step t:
    loss (mean over micro-batches, before the update), loss.<m> (pooled over the
    targets of modality m in all micro-batches), lr, grad_norm.
    """
    M = len(micro_batches)
    grads = {n: torch.zeros_like(p, dtype=dtype) for n, p in params.items()}
    loss_sum = 0.0
    ce_sums = {m: 0.0 for m in modality_names(cfg)}
    ce_counts = {m: 0 for m in modality_names(cfg)}
    for tokens in micro_batches:
        leaves = {n: p.detach().to(dtype).clone().requires_grad_(True) for n, p in params.items()}
        loss, _, det = forward(cfg, leaves, tokens, gumbel_generator, details=True)
        loss.backward()
        loss_sum += float(loss)
        for n, leaf in leaves.items():
            if leaf.grad is not None:
                grads[n] += leaf.grad / M
        for index, name in enumerate(modality_names(cfg)):
            mask = det["target_modality"] == index
            ce_sums[name] += float(det["ce"].detach()[mask].sum())
            ce_counts[name] += int(mask.sum())
    info = adamw_step(cfg, params, grads, state, t)
    metrics = {"step": t, "loss": loss_sum / M}
    for name in modality_names(cfg):
        # A step without the modality's targets has no loss for it (null in
        # momarun's metrics), and says how many it had.
        metrics["loss." + name] = ce_sums[name] / ce_counts[name] if ce_counts[name] else None
        metrics["targets." + name] = ce_counts[name]
    metrics["lr"] = info["lr"]
    metrics["grad_norm"] = info["grad_norm"]
    return metrics


# ---------------------------------------------------------------------------
# safetensors (no external package)
# ---------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> torch tensor or numpy array (written in the given order)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        array = np.array(value, order="C")  # (ascontiguousarray would turn [] into [1])
        code = next((c for c, t in _ST_DTYPES.items() if array.dtype == t), None)
        if code is None:
            raise ValueError(f"{name}: unsupported dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data section to 8 bytes
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_safetensors(path, with_metadata=False):
    """Returns {name: torch tensor} (and the metadata dict when asked). BF16 becomes F32."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} past the end of the file")
    header = json.loads(raw[8:8 + n].decode())
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32).reshape(shape)
        else:
            dt = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
            array = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        tensors[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    if with_metadata:
        return tensors, metadata
    return tensors


# ---------------------------------------------------------------------------
# Token files (raw little-endian int32 [B, S+1])
# ---------------------------------------------------------------------------

def read_tokens(cfg, path):
    S1 = cfg["seq_len"] + 1
    size = os.path.getsize(path)
    if size == 0 or size % (4 * S1) != 0:
        raise ValueError(f"{path}: {size} bytes is not a whole number of int32 sequences "
                         f"of seq_len + 1 = {S1} ids")
    raw = np.fromfile(path, dtype="<i4")
    tokens = torch.from_numpy(raw.astype(np.int64)).view(-1, S1)
    bad = (tokens < 0) | (tokens >= cfg["vocab_size"])
    if bool(bad.any()):
        flat = int(torch.nonzero(bad.flatten())[0])
        raise ValueError(f"{path}: token id {int(tokens.flatten()[flat])} at index {flat} "
                         f"is outside [0, {cfg['vocab_size']})")
    return tokens


def write_tokens(path, tokens):
    np.asarray(torch.as_tensor(tokens).numpy(), dtype="<i4").tofile(path)


def random_tokens(cfg, batch, seed):
    """Random mixed-modal sequences [batch, S+1]: alternating modality segments, every
    modality present in every sequence (when S+1 allows). Inside a segment the next id
    usually follows the previous one by a fixed stride, so a model can learn something."""
    rng = np.random.default_rng(seed)
    S1 = cfg["seq_len"] + 1
    table = modality_of_id(cfg).numpy()
    owned = [np.nonzero(table == i)[0] for i in range(len(cfg["modalities"]))]
    owned = [ids for ids in owned if len(ids) > 0]  # a catch-all may own no id
    M = len(owned)
    out = np.zeros((batch, S1), dtype=np.int64)
    for b in range(batch):
        row = []
        order = list(rng.permutation(M))
        first_cap = max(1, S1 // M)
        while len(row) < S1:
            if order:
                m = order.pop(0)
                cap = first_cap
            else:
                m = int(rng.integers(M)) if M > 1 else 0
                cap = max(1, S1 // 3)
            length = int(rng.integers(1, cap + 1))
            ids = owned[m]
            j = int(rng.integers(len(ids)))
            for _ in range(length):
                row.append(int(ids[j]))
                j = (j + 3) % len(ids) if rng.random() < 0.8 else int(rng.integers(len(ids)))
        out[b] = row[:S1]
    return torch.from_numpy(out)
