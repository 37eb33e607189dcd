"""Self-tests of the PyTorch reference (moma_reference.py, reference.py).

Run: /usr/bin/python3 -m unittest discover -s test/e2e -p 'test_reference.py'
  or /usr/bin/python3 test/e2e/test_reference.py
"""
import json
import math
import pathlib
import os
import struct
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import moma_reference as R  # noqa: E402
import reference as cli  # noqa: E402

EXAMPLES = os.path.join(HERE, "..", "..", "examples", "models", "tiny")
torch.set_default_dtype(torch.float64)

TEXT_MAX = 32  # text owns [0, 32) (the catch-all), image owns [32, 64)


def tiny_cfg(variant, norm="swin", qk_norm=True, d=16, heads=2, seq_len=8,
             mod_capacity=0.5, capacity_factor=1.0):
    desc = {
        "name": f"{variant}_test", "vocab_size": 64,
        "modalities": [{"name": "text"}, {"name": "image", "token_ranges": [[32, 64]]}],
        "d_model": d, "n_layers": 2, "n_heads": heads, "ffn_hidden": 24,
        "seq_len": seq_len, "norm": norm, "qk_norm": qk_norm,
    }
    groups = {
        "dense": None,
        "moe_1t1i": [("text", ["text"], 1), ("image", ["image"], 1)],
        "moe_4t4i": [("text", ["text"], 4), ("image", ["image"], 4)],
        "moe_8x": [("all", ["text", "image"], 8)],
        "mod_moe_4t4i": [("text", ["text"], 4), ("image", ["image"], 4)],
        "mod_dense": None,
    }[variant]
    if groups is not None:
        desc["moe"] = {"groups": [{"name": n, "modalities": m, "experts": e} for n, m, e in groups],
                       "capacity_factor": capacity_factor}
    if variant.startswith("mod_"):
        desc["mod"] = {"every": 2, "offset": 0, "capacity": mod_capacity}
    return R.fill_defaults(desc)


def make_params(cfg, seed=0, router_std=1.0):
    """Init params in float64 with non-trivial norms and large router scores (so that
    top-k boundaries are far apart compared with finite-difference steps)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    params = R.init_params(cfg, seed, torch.float64)
    for name, p in params.items():
        if name.endswith("norm.weight"):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith(".bias"):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("router.weight") and not R.is_aux(name):
            p.copy_(router_std * torch.randn(p.shape, generator=gen))
        elif name.endswith((".w1", ".w2", ".w3", "feed_forward.w1.weight",
                            "feed_forward.w2.weight", "feed_forward.w3.weight")):
            p.mul_(10.0)  # make the FFN matter next to the residual
    return params


def mixed_tokens(cfg, batch=2, seed=0):
    return R.random_tokens(cfg, batch, seed)


def same_routing(a, b):
    if len(a) != len(b):
        return False
    for (na, ta), (nb, tb) in zip(a, b):
        if na != nb:
            return False
        if isinstance(ta, str) or isinstance(tb, str):
            if ta != tb:
                return False
        elif ta.shape != tb.shape or not torch.equal(ta, tb):
            return False
    return True


class GradCheck(unittest.TestCase):
    """(a) autograd gradients against finite differences, routing held fixed."""

    VARIANTS = ["dense", "moe_1t1i", "moe_4t4i", "moe_8x", "mod_moe_4t4i"]

    def check_variant(self, variant, norm, qk_norm=True):
        cfg = tiny_cfg(variant, norm, qk_norm)
        params = make_params(cfg, seed=self.VARIANTS.index(variant) + (10 if norm == "pre" else 0))
        tokens = mixed_tokens(cfg, 2, seed=3)
        base_record = []
        R.forward(cfg, params, tokens, record=base_record)
        records = []

        # Full gradcheck on the routers (the gates' gradient path) and a q-norm bias.
        names = [n for n, _, _, aux in R.parameter_specs(cfg)
                 if not aux and (n.endswith("router.weight") or n.endswith("q_norm.bias"))]
        names = names[:3]

        def loss_of(*tensors):
            p = dict(params)
            p.update(zip(names, tensors))
            rec = []
            loss, per_modality = R.forward(cfg, p, tokens, record=rec)
            records.append(rec)
            return (loss, per_modality["text"], per_modality["image"])

        inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
        if inputs:
            self.assertTrue(torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-7, rtol=1e-4))

        # Directional derivatives of R.grad() against central differences, over
        # random directions through ALL trained parameters at once.
        out = R.grad(cfg, params, tokens)
        gen = torch.Generator().manual_seed(7)
        for _ in range(3):
            direction = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()
                         if not R.is_aux(n)}
            length = math.sqrt(sum(float((d * d).sum()) for d in direction.values()))
            direction = {n: d / length for n, d in direction.items()}
            analytic = sum(float((out["grad." + n] * d).sum()) for n, d in direction.items())
            h = 1e-5  # along a unit direction: truncation ~h^2, rounding ~1e-16/h
            shifted = []
            for sign in (1, -1):
                p = {n: t + sign * h * direction[n] if n in direction else t for n, t in params.items()}
                rec = []
                shifted.append(float(R.forward(cfg, p, tokens, record=rec)[0]))
                records.append(rec)
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            self.assertAlmostEqual(analytic, numeric, delta=1e-6 * abs(numeric) + 1e-10,
                                   msg=f"{variant} {norm} directional derivative")
        for rec in records:
            self.assertTrue(same_routing(base_record, rec),
                            f"{variant} {norm}: routing changed under finite differences")
        for n, _, _, aux in R.parameter_specs(cfg):
            if aux:
                self.assertTrue(torch.equal(out["grad." + n], torch.zeros_like(params[n])))
        return base_record

    def test_swin(self):
        for v in self.VARIANTS:
            with self.subTest(variant=v):
                self.check_variant(v, "swin")

    def test_pre(self):
        for v in self.VARIANTS:
            with self.subTest(variant=v):
                self.check_variant(v, "pre")

    def test_no_qk_norm(self):
        self.check_variant("mod_moe_4t4i", "swin", qk_norm=False)
        self.check_variant("moe_8x", "pre", qk_norm=False)

    def test_routing_is_nontrivial(self):
        # The gradchecks above are only meaningful if experts choose different tokens
        # and some tokens are left out (or taken twice).
        cfg = tiny_cfg("moe_4t4i")
        rec = []
        R.forward(cfg, make_params(cfg), mixed_tokens(cfg, 2, 3), record=rec)
        chosen = rec[0][1]
        self.assertEqual(rec[0][0], "layers.0.moe.text.")
        self.assertFalse(all(torch.equal(chosen[0], chosen[e]) for e in range(1, 4)))
        counts = torch.bincount(chosen.flatten())
        self.assertTrue(bool((counts != 1).any()))


class ExpertChoice(unittest.TestCase):
    """(b) expert-choice edge cases."""

    def test_capacity_formula(self):
        self.assertEqual(R.expert_capacity(1.0, 10, 4), 3)  # ceil(2.5)
        self.assertEqual(R.expert_capacity(1.0, 2, 4), 1)   # fewer tokens than experts
        self.assertEqual(R.expert_capacity(2.0, 3, 2), 3)   # min(n, ...)
        self.assertEqual(R.expert_capacity(1.0, 0, 4), 0)
        # IEEE double, (c * n) / E in that order: 1.1 * 100 = 110.00000000000001, so
        # ceil(55.000000000000007) = 56; (0.9 * 50) / 3 = 15.0 where 0.9 * (50 / 3)
        # would round to 15.000000000000002 and give 16.
        self.assertEqual(R.expert_capacity(1.1, 100, 2), 56)
        self.assertEqual(R.expert_capacity(0.9, 50, 3), 15)
        self.assertEqual(R.expert_capacity(1.0, 8, 4), 2)

    def test_ties_go_to_lower_index(self):
        s = torch.tensor([0.5, 0.7, 0.5, 0.5, 0.7, 0.2])
        self.assertEqual(R.top_k_lower_index(s, 3).tolist(), [0, 1, 4])
        self.assertEqual(R.top_k_lower_index(s, 4).tolist(), [0, 1, 2, 4])
        # With a zero router every score is sigmoid(0) = 0.5: each expert takes the
        # group's first k tokens in flat order.
        cfg = tiny_cfg("moe_4t4i")
        params = make_params(cfg)
        params["layers.0.moe.text.router.weight"].zero_()
        tokens = mixed_tokens(cfg, 2, 5)
        rec = []
        R.forward(cfg, params, tokens, record=rec)
        name, chosen = rec[0]
        self.assertEqual(name, "layers.0.moe.text.")
        members = torch.nonzero(tokens[:, :-1].reshape(-1) < TEXT_MAX).flatten()
        k = R.expert_capacity(1.0, members.numel(), 4)
        for e in range(4):
            self.assertEqual(chosen[e].tolist(), members[:k].tolist())

    def test_empty_group(self):
        cfg = tiny_cfg("moe_4t4i")
        params = make_params(cfg)
        tokens = torch.randint(0, TEXT_MAX, (2, cfg["seq_len"] + 1), generator=torch.Generator().manual_seed(1))
        rec = []
        loss, per_modality = R.forward(cfg, params, tokens, record=rec)
        self.assertIn(("layers.0.moe.image.", "empty"), rec)
        self.assertEqual(float(per_modality["image"]), 0.0)
        out = R.grad(cfg, params, tokens)
        for n in ("router.weight", "w1", "w2", "w3"):
            g = out["grad.layers.1.moe.image." + n]
            self.assertTrue(torch.equal(g, torch.zeros_like(g)), n)
        self.assertTrue(math.isfinite(float(loss)))

    def test_fewer_tokens_than_experts(self):
        cfg = tiny_cfg("moe_4t4i")
        params = make_params(cfg)
        tokens = torch.randint(0, TEXT_MAX, (2, cfg["seq_len"] + 1), generator=torch.Generator().manual_seed(2))
        tokens[0, 3] = 40  # exactly two image INPUT tokens
        tokens[1, 5] = 50
        tokens[1, -1] = 60  # an image target only: not an input, not in the group
        rec = []
        _, per_modality = R.forward(cfg, params, tokens, record=rec)
        image = [t for n, t in rec if n == "layers.0.moe.image."][0]
        self.assertEqual(tuple(image.shape), (4, 1))  # k = min(2, ceil(2/4)) = 1
        self.assertTrue(set(image.flatten().tolist()) <= {3, 8 + 5})
        # Three image targets: 40 and 50 (as targets of the preceding token) and 60.
        self.assertGreater(float(per_modality["image"]), 0.0)

    def test_module_against_naive_loop(self):
        """The batched MoMa module against a token-by-token sum over experts."""
        cfg = tiny_cfg("moe_4t4i", capacity_factor=1.5)
        params = make_params(cfg)
        gen = torch.Generator().manual_seed(4)
        n = 13
        v = torch.randn(n, cfg["d_model"], generator=gen)
        ids = torch.randint(0, 64, (n,), generator=gen)
        out = R.moma(cfg, params, 0, v, ids)
        expected = torch.zeros_like(v)
        for group in cfg["moe"]["groups"]:
            p = "layers.0.moe." + group["name"] + "."
            members = [i for i in range(n) if (int(ids[i]) >= TEXT_MAX) == (group["name"] == "image")]
            if not members:
                continue
            s = torch.sigmoid(v[members] @ params[p + "router.weight"].t())
            k = math.ceil(1.5 * len(members) / 4)
            for e in range(4):
                # Highest score first, then the lower index.
                order = sorted(range(len(members)), key=lambda j: (-float(s[j, e]), j))[:k]
                for j in order:
                    i = members[j]
                    ffn = R.swiglu(v[i:i + 1], params[p + "w1"][e], params[p + "w3"][e], params[p + "w2"][e])[0]
                    expected[i] += s[j, e] * ffn
        self.assertTrue(torch.allclose(out, expected, atol=1e-12, rtol=1e-10))


def naive_block(cfg, params, layer, x, ids, seq, pos):
    """A loop-by-loop block with a dense FFN (swin or pre), for checking attention."""
    d, H = cfg["d_model"], cfg["n_heads"]
    hd, half, eps = d // H, d // H // 2, cfg["norm_eps"]
    pre = f"layers.{layer}."
    P = params

    def rms(v, w):
        return v / math.sqrt(float((v * v).mean()) + eps) * w

    def layer_norm(v, w, b):
        mu = float(v.mean())
        var = float(((v - mu) ** 2).mean())
        return (v - mu) / math.sqrt(var + eps) * w + b

    def rope(v, s):
        out = torch.empty_like(v)
        for j in range(hd):
            angle = s * cfg["rope_theta"] ** (-2.0 * (j % half) / hd)
            other = -v[j + half] if j < half else v[j - half]
            out[j] = v[j] * math.cos(angle) + other * math.sin(angle)
        return out

    def attn(xx):
        n = xx.shape[0]
        q = xx @ P[pre + "attention.wq.weight"].t()
        k = xx @ P[pre + "attention.wk.weight"].t()
        v = xx @ P[pre + "attention.wv.weight"].t()
        o = torch.zeros(n, d)
        for i in range(n):
            for h in range(H):
                sl = slice(h * hd, (h + 1) * hd)

                def head(t, j, which):
                    u = t[j, sl]
                    if cfg["qk_norm"]:
                        u = layer_norm(u, P[pre + f"attention.{which}_norm.weight"][h],
                                       P[pre + f"attention.{which}_norm.bias"][h])
                    return rope(u, int(pos[j]))
                qi = head(q, i, "q")
                visible = [j for j in range(n) if seq[j] == seq[i] and pos[j] <= pos[i]]
                logits = [float(qi @ head(k, j, "k")) / math.sqrt(hd) for j in visible]
                top = max(logits)
                weights = [math.exp(a - top) for a in logits]
                total = sum(weights)
                for w, j in zip(weights, visible):
                    o[i, sl] += (w / total) * v[j, sl]
        return o @ P[pre + "attention.wo.weight"].t()

    def ffn(v):
        f = pre + "feed_forward."
        return R.swiglu(v, P[f + "w1.weight"], P[f + "w3.weight"], P[f + "w2.weight"])

    an, fn = P[pre + "attention_norm.weight"], P[pre + "ffn_norm.weight"]
    if cfg["norm"] == "swin":
        a = x + torch.stack([rms(r, an) for r in attn(x)])
        return a + torch.stack([rms(r, fn) for r in ffn(a)])
    a = x + attn(torch.stack([rms(r, an) for r in x]))
    return a + ffn(torch.stack([rms(r, fn) for r in a]))


class MixtureOfDepths(unittest.TestCase):
    """(c) MoD capacity, and attention among selected tokens with original positions."""

    def test_capacity(self):
        self.assertEqual(R.mod_capacity(0.25, 16), 4)
        self.assertEqual(R.mod_capacity(0.25, 17), 5)
        self.assertEqual(R.mod_capacity(1.0, 16), 16)
        self.assertEqual(R.mod_capacity(0.55, 100), 56)  # 0.55 * 100 = 55.00000000000001

    def test_selection_count_and_order(self):
        for c in (0.25, 0.3, 0.5):
            cfg = tiny_cfg("mod_moe_4t4i", mod_capacity=c, seq_len=12)
            tokens = mixed_tokens(cfg, 3, 9)
            rec = []
            R.forward(cfg, make_params(cfg), tokens, record=rec)
            selected = [t for n, t in rec if n == "layers.0.mod"][0]
            N = 3 * 12
            self.assertEqual(selected.numel(), math.ceil(c * N))
            self.assertEqual(selected.tolist(), sorted(selected.tolist()))

    def test_block_matches_naive_attention(self):
        for norm in ("swin", "pre"):
            for qk in (True, False):
                cfg = tiny_cfg("dense", norm, qk, seq_len=6)
                params = make_params(cfg)
                tokens = mixed_tokens(cfg, 2, 1)
                B, S = 2, 6
                ids = tokens[:, :S].reshape(-1)
                seq = torch.arange(B).repeat_interleave(S)
                pos = torch.arange(S).repeat(B)
                noise = torch.randn(B * S, cfg["d_model"], generator=torch.Generator().manual_seed(5))
                x = params["tok_embeddings.weight"][ids] + 0.3 * noise
                got = R.block(cfg, params, 0, x, ids, seq, pos)
                want = naive_block(cfg, params, 0, x, ids, seq, pos)
                self.assertTrue(torch.allclose(got, want, atol=1e-10), f"{norm} qk_norm={qk}")

    seed = 6

    def test_mod_layer_keeps_positions(self):
        exercised = 0
        for norm in ("swin", "pre"):
            cfg = tiny_cfg("mod_dense", norm, mod_capacity=0.5, seq_len=6)
            params = make_params(cfg)
            B, S = 2, 6
            tokens = mixed_tokens(cfg, B, 2)
            ids = tokens[:, :S].reshape(-1)
            seq = torch.arange(B).repeat_interleave(S)
            pos = torch.arange(S).repeat(B)
            noise = torch.randn(B * S, cfg["d_model"], generator=torch.Generator().manual_seed(self.seed))
            x = params["tok_embeddings.weight"][ids] + 0.3 * noise
            rec = []
            out = R.mod_block(cfg, params, 0, x, ids, seq, pos, record=rec)
            selected = rec[0][1]
            self.assertEqual(selected.numel(), 6)
            r = torch.sigmoid(x @ params["layers.0.mod.router.weight"].t())[:, 0]
            # The selection is the top-6 by r.
            threshold = float(r[selected].min())
            others = [i for i in range(B * S) if i not in selected.tolist()]
            self.assertTrue(all(float(r[i]) <= threshold for i in others))
            sel = selected.tolist()
            blk = naive_block(cfg, params, 0, x[sel], ids[sel], seq[sel], pos[sel])
            for row, i in enumerate(sel):
                want = x[i] + r[i] * (blk[row] - x[i])
                self.assertTrue(torch.allclose(out[i], want, atol=1e-10))
            for i in others:
                self.assertTrue(torch.equal(out[i], x[i]))
            # Renumbering the selected tokens 0..k-1 gives a different result when some
            # sequence's selection has gaps (RoPE only sees position differences).
            packed_pos = torch.tensor([sum(1 for j in sel[:row] if int(seq[j]) == int(seq[i]))
                                       for row, i in enumerate(sel)])
            gaps = (pos[sel] - packed_pos)
            if any(len(set(gaps[seq[sel] == b].tolist())) > 1 for b in range(B)):
                exercised += 1
                alt = naive_block(cfg, params, 0, x[sel], ids[sel], seq[sel], packed_pos)
                self.assertFalse(torch.allclose(alt, blk, atol=1e-8))
        self.assertGreater(exercised, 0)


class Optimizer(unittest.TestCase):
    """(d) AdamW and clipping by hand, (e) the lr schedule."""

    def test_lr_schedule(self):
        train = dict(R.TRAIN_DEFAULTS, lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=10)
        expect = {1: 0.25, 2: 0.5, 4: 1.0, 5: 1.0 - 0.9 / 6, 9: 1.0 - 0.9 * 5 / 6, 10: 0.1, 11: 0.1}
        for t, lr in expect.items():
            self.assertAlmostEqual(R.lr_at(train, t), lr, places=15, msg=f"t={t}")
        no_warmup = dict(train, warmup_steps=0)
        self.assertAlmostEqual(R.lr_at(no_warmup, 1), 1.0 - 0.9 / 10, places=15)
        self.assertAlmostEqual(R.lr_at(no_warmup, 10), 0.1, places=15)
        long_warmup = dict(train, warmup_steps=100)  # W = min(100, 10) = 10
        self.assertAlmostEqual(R.lr_at(long_warmup, 5), 0.5, places=15)
        self.assertAlmostEqual(R.lr_at(long_warmup, 11), 0.1, places=15)
        # [choice] W == T: step T is still warm-up (lr), min_lr only after it.
        self.assertAlmostEqual(R.lr_at(long_warmup, 10), 1.0, places=15)
        defaults = dict(R.TRAIN_DEFAULTS)  # W = min(4000, 1000) = 1000
        self.assertAlmostEqual(R.lr_at(defaults, 1), 1e-4 / 1000, places=18)
        self.assertAlmostEqual(R.lr_at(defaults, 500), 0.5e-4, places=18)

    def test_adamw_by_hand(self):
        cfg = tiny_cfg("mod_moe_4t4i")
        cfg["aux_routers"] = True
        cfg["train"].update(lr=0.01, min_lr=0.001, warmup_steps=2, total_steps=5,
                            grad_clip=0.5, weight_decay=0.1, beta1=0.8, beta2=0.9, eps=1e-5)
        specs = R.parameter_specs(cfg)
        params = R.init_params(cfg, 3, torch.float64)
        start = {n: p.clone() for n, p in params.items()}
        state = R.new_optimizer_state(params)
        gen = torch.Generator().manual_seed(5)
        decayed, plain = "layers.0.attention.wq.weight", "layers.0.attention.q_norm.bias"
        hand = {n: (start[n].numpy().copy(), 0.0, 0.0) for n in (decayed, plain)}
        for t in (1, 2, 3):
            grads = {n: torch.randn(s, generator=gen) for n, s, _, _ in specs}
            info = R.adamw_step(cfg, params, grads, state, t)
            norm = math.sqrt(sum(float((grads[n] ** 2).sum()) for n, _, _, aux in specs if not aux))
            self.assertAlmostEqual(info["grad_norm"], norm, places=9)
            scale = min(1.0, 0.5 / (norm + 1e-6))
            lr = {1: 0.005, 2: 0.01, 3: 0.01 + (0.001 - 0.01) * 1 / 3}[t]
            self.assertAlmostEqual(info["lr"], lr, places=15)
            for n, wd in ((decayed, 0.1), (plain, 0.0)):
                p, m, v = hand[n]
                g = grads[n].numpy() * scale
                m = 0.8 * m + 0.2 * g
                v = 0.9 * v + 0.1 * g * g
                p = p - lr * (wd * p + (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-5))
                hand[n] = (p, m, v)
                np.testing.assert_allclose(params[n].numpy(), p, rtol=1e-12, atol=1e-15)
        self.assertFalse(R.has_weight_decay(plain))
        self.assertTrue(R.has_weight_decay(decayed))
        for n, _, _, aux in specs:
            if aux:
                self.assertTrue(torch.equal(params[n], start[n]), n)

    def test_weight_decay_names(self):
        cfg = R.load_config(os.path.join(EXAMPLES, "mod_moe_4t4i_aux.json"))
        decay = {n for n, _, wd, _ in R.parameter_specs(cfg) if wd}
        self.assertIn("output.weight", decay)
        self.assertIn("layers.0.moe.text.w1", decay)
        self.assertIn("layers.0.moe.text.router.weight", decay)
        self.assertIn("layers.0.mod.router.weight", decay)
        dense = tiny_cfg("dense")
        self.assertTrue(all(wd for n, _, wd, _ in R.parameter_specs(dense) if ".feed_forward." in n))
        for n in ("tok_embeddings.weight", "norm.weight", "layers.0.attention_norm.weight",
                  "layers.0.attention.k_norm.weight", "layers.0.attention.k_norm.bias",
                  "layers.0.mod.aux_router.w1.weight"):
            self.assertNotIn(n, decay)

    def test_micro_batches_average(self):
        cfg = tiny_cfg("moe_4t4i")
        cfg["train"].update(grad_clip=0.0, warmup_steps=0)
        params = make_params(cfg)
        a, b = mixed_tokens(cfg, 2, 11), mixed_tokens(cfg, 2, 12)
        ga, gb = R.grad(cfg, params, a), R.grad(cfg, params, b)
        mean = {n: (ga["grad." + n] + gb["grad." + n]) / 2 for n in params}
        by_hand = {n: p.clone() for n, p in params.items()}
        R.adamw_step(cfg, by_hand, mean, R.new_optimizer_state(by_hand), 1)
        stepped = {n: p.clone() for n, p in params.items()}
        metrics = R.train_step(cfg, stepped, [a, b], R.new_optimizer_state(stepped), 1)
        self.assertAlmostEqual(metrics["loss"], (float(ga["loss"]) + float(gb["loss"])) / 2, places=12)
        for n in params:
            self.assertTrue(torch.allclose(stepped[n], by_hand[n], atol=1e-13), n)


class Model(unittest.TestCase):
    def test_parameter_order(self):
        cfg = R.load_config(os.path.join(EXAMPLES, "mod_moe_4t4i_aux.json"))
        names = [n for n, _, _, _ in R.parameter_specs(cfg)]
        layer0 = [n for n in names if n.startswith("layers.0.")]
        self.assertEqual(names[0], "tok_embeddings.weight")
        self.assertEqual(names[-2:], ["norm.weight", "output.weight"])
        self.assertEqual(layer0, ["layers.0." + s for s in [
            "attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
            "attention.q_norm.weight", "attention.q_norm.bias", "attention.k_norm.weight",
            "attention.k_norm.bias", "attention_norm.weight", "ffn_norm.weight",
            "moe.text.router.weight", "moe.text.w1", "moe.text.w3", "moe.text.w2",
            "moe.text.aux_router.w1.weight", "moe.text.aux_router.w2.weight",
            "moe.image.router.weight", "moe.image.w1", "moe.image.w3", "moe.image.w2",
            "moe.image.aux_router.w1.weight", "moe.image.aux_router.w2.weight",
            "mod.router.weight", "mod.aux_router.w1.weight", "mod.aux_router.w2.weight"]])
        self.assertNotIn("layers.1.mod.router.weight", names)
        shapes = {n: s for n, s, _, _ in R.parameter_specs(cfg)}
        self.assertEqual(shapes["layers.0.moe.text.w2"], (4, 128, 344))
        self.assertEqual(shapes["layers.0.mod.aux_router.w2.weight"], (1, 64))
        cfg = R.load_config(os.path.join(EXAMPLES, "moe_7t1i.json"))
        names = [n for n, _, _, _ in R.parameter_specs(cfg)]
        self.assertNotIn("layers.0.moe.image.router.weight", names)  # E = 1: no router
        self.assertIn("layers.0.moe.image.w1", names)

    def test_defaults(self):
        cfg = R.fill_defaults({"name": "x", "d_model": 8, "n_layers": 1, "n_heads": 2,
                               "ffn_hidden": 8, "seq_len": 4, "moe": {"groups": [
                                   {"name": "t", "modalities": ["text"], "experts": 2},
                                   {"name": "i", "modalities": ["image"], "experts": 2}]},
                               "mod": {}})
        self.assertEqual(R.modality_ranges(cfg), {"text": [[0, 4], [8196, 65536]], "image": [[4, 8196]]})
        self.assertEqual((cfg["norm"], cfg["qk_norm"], cfg["z_loss"], cfg["rope_theta"]), ("swin", True, 1e-5, 10000.0))
        self.assertEqual((cfg["moe"]["every"], cfg["moe"]["capacity_factor"], cfg["moe"]["gumbel"]), (1, 1.0, False))
        self.assertEqual((cfg["mod"]["every"], cfg["mod"]["offset"], cfg["mod"]["capacity"]), (2, 0, 0.25))
        self.assertEqual(cfg["train"]["warmup_steps"], 4000)
        self.assertEqual(int(R.group_of_id(cfg)[8195]), 1)
        self.assertEqual(int(R.group_of_id(cfg)[8196]), 0)
        with self.assertRaises(ValueError):
            R.fill_defaults({"name": "x", "vocab_size": 512, "d_model": 8, "n_layers": 1,
                             "n_heads": 2, "ffn_hidden": 8, "seq_len": 4})

    def test_one_expert_groups_equal_dense(self):
        """moe_1t1i whose two FFNs copy a dense model's FFN is the dense model."""
        dense = tiny_cfg("dense")
        moe = tiny_cfg("moe_1t1i")
        params = make_params(dense)
        copied = {}
        for n, _, _, _ in R.parameter_specs(moe):
            if ".moe." in n:
                l, w = n.split(".")[1], n.split(".")[-1]
                copied[n] = params[f"layers.{l}.feed_forward.{w}.weight"][None].clone()
            else:
                copied[n] = params[n]
        tokens = mixed_tokens(dense, 2, 4)
        self.assertAlmostEqual(float(R.forward(dense, params, tokens)[0]),
                               float(R.forward(moe, copied, tokens)[0]), places=12)

    def test_loss_terms(self):
        cfg = tiny_cfg("dense")
        cfg["z_loss"] = 0.5
        params = make_params(cfg)
        tokens = mixed_tokens(cfg, 2, 6)
        loss, per_modality, det = R.forward(cfg, params, tokens, details=True)
        ce = det["ce"].detach()
        z_free = dict(cfg, z_loss=0.0)
        loss0, _ = R.forward(z_free, params, tokens)
        self.assertAlmostEqual(float(loss0), float(ce.mean()), places=12)
        logits = det["logits"].detach()
        top = logits.max(-1, keepdim=True).values
        lse = (top[:, 0] + torch.log(torch.exp(logits - top).sum(-1)))
        targets = tokens[:, 1:].reshape(-1)
        self.assertTrue(torch.allclose(ce, lse - logits[torch.arange(len(targets)), targets], atol=1e-12))
        self.assertAlmostEqual(float(loss), float(ce.mean() + 0.5 * (lse ** 2).mean()), places=12)
        image = targets >= TEXT_MAX
        self.assertAlmostEqual(float(per_modality["image"]), float(ce[image].mean()), places=12)
        self.assertAlmostEqual(float(per_modality["text"]), float(ce[~image].mean()), places=12)

    def test_gumbel_noise(self):
        cfg = tiny_cfg("moe_4t4i")
        cfg["moe"]["gumbel"] = True
        params = make_params(cfg)
        tokens = mixed_tokens(cfg, 2, 8)
        a = R.forward(cfg, params, tokens, torch.Generator().manual_seed(1))[0]
        b = R.forward(cfg, params, tokens, torch.Generator().manual_seed(1))[0]
        c = R.forward(cfg, params, tokens)[0]
        self.assertEqual(float(a), float(b))
        self.assertNotEqual(float(a), float(c))
        self.assertEqual(float(R.forward(cfg, params, tokens)[0]), float(c))


class Files(unittest.TestCase):
    """(f) safetensors round trip, and the command line."""

    def test_safetensors_round_trip(self):
        tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3),
                   "loss": torch.tensor(1.5, dtype=torch.float32),
                   "i": torch.tensor([1, -2, 3], dtype=torch.int32),
                   "d": torch.randn(2, 2, 2, dtype=torch.float64)}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.safetensors")
            R.write_safetensors(path, tensors, {"step": 3})
            back, meta = R.read_safetensors(path, with_metadata=True)
            self.assertEqual(meta, {"step": "3"})
            self.assertEqual(list(back), list(tensors))
            for n, t in tensors.items():
                self.assertEqual(back[n].dtype, t.dtype)
                self.assertEqual(back[n].shape, t.shape)
                self.assertTrue(torch.equal(back[n], t))
            raw = pathlib.Path(path).read_bytes()
            (n,) = struct.unpack("<Q", raw[:8])
            header = json.loads(raw[8:8 + n])
            self.assertEqual(header["loss"], {"dtype": "F32", "shape": [], "data_offsets": [24, 28]})
            self.assertEqual(len(raw), 8 + n + 24 + 4 + 12 + 64)
            # BF16 is read as F32.
            bf = {"__metadata__": {}, "b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}
            text = json.dumps(bf).encode()
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text + struct.pack("<HH", 0x3F80, 0xC000))
            self.assertEqual(R.read_safetensors(path)["b"].tolist(), [1.0, -2.0])

    def test_cli(self):
        model = os.path.join(EXAMPLES, "moe_4t4i.json")
        with tempfile.TemporaryDirectory() as tmp:
            w, t, g = (os.path.join(tmp, n) for n in ("w.safetensors", "t.bin", "g.safetensors"))
            self.assertEqual(cli.main(["init", model, "--seed", "1", "-o", w]), 0)
            self.assertEqual(cli.main(["tokens", model, "--batch", "2", "--seed", "3", "-o", t]), 0)
            cfg = R.load_config(model)
            tokens = R.read_tokens(cfg, t)
            self.assertEqual(tuple(tokens.shape), (2, 129))
            self.assertTrue(bool((tokens < 256).any()) and bool((tokens >= 256).any()))
            self.assertEqual(cli.main(["grad", model, "--weights", w, "--tokens", t, "--out", g]), 0)
            out = R.read_safetensors(g)
            expect = ["loss", "loss.text", "loss.image"] + ["grad." + n for n, _, _, _ in R.parameter_specs(cfg)]
            self.assertEqual(sorted(out), sorted(expect))
            self.assertTrue(all(v.dtype == torch.float32 for v in out.values()))
            self.assertEqual(tuple(out["loss"].shape), ())
            self.assertAlmostEqual(float(out["loss"]), math.log(512), delta=0.2)
            # Errors: a size that does not divide, an id out of range.
            with open(t, "ab") as f:
                f.write(b"\0\0\0\0")
            self.assertEqual(cli.main(["grad", model, "--weights", w, "--tokens", t, "--out", g]), 1)
            bad = tokens.clone()
            bad[1, 7] = 512
            R.write_tokens(t, bad)
            self.assertEqual(cli.main(["grad", model, "--weights", w, "--tokens", t, "--out", g]), 1)

    def test_cli_train(self):
        desc = json.loads(pathlib.Path(EXAMPLES, "mod_moe_4t4i.json").read_text())
        desc.update(d_model=32, seq_len=16, ffn_hidden=48)
        desc["train"].update(batch_size=2, micro_batches=2, warmup_steps=2, total_steps=6)
        with tempfile.TemporaryDirectory() as tmp:
            model = os.path.join(tmp, "m.json")
            pathlib.Path(model).write_text(json.dumps(desc))
            w, t, o = (os.path.join(tmp, n) for n in ("w.safetensors", "t.bin", "o.safetensors"))
            self.assertEqual(cli.main(["init", model, "-o", w]), 0)
            self.assertEqual(cli.main(["tokens", model, "--batch", "6", "-o", t]), 0)
            self.assertEqual(cli.main(["train", model, "--weights", w, "--tokens", t, "--steps", "3",
                                       "--out", o, "--save-optim"]), 0)
            losses = json.loads(pathlib.Path(tmp, "o.losses.json").read_text())
            self.assertEqual(len(losses), 3)
            metrics = [json.loads(line) for line in pathlib.Path(tmp, "o.metrics.jsonl").read_text().splitlines()]
            self.assertEqual([m["step"] for m in metrics], [1, 2, 3])
            self.assertAlmostEqual(metrics[0]["lr"], 0.0015)
            out, meta = R.read_safetensors(o, with_metadata=True)
            self.assertEqual(meta, {"step": "3", "data_position": "12"})
            self.assertIn("optim.m.output.weight", out)
            # Step 1 is the loss of rows 0..3 (two micro-batches) under the initial weights.
            cfg = R.load_config(model)
            params = R.read_safetensors(w)
            tokens = R.read_tokens(cfg, t)
            first = (float(R.grad(cfg, params, tokens[0:2])["loss"]) +
                     float(R.grad(cfg, params, tokens[2:4])["loss"])) / 2
            self.assertAlmostEqual(losses[0], first, places=10)


if __name__ == "__main__":
    unittest.main()
