"""An efficient eager PyTorch training step of a MoMa model: the baseline a
performance-minded user would run instead of momarun.

It is test/e2e/moma_reference.py (the spec, section by section) with the two
parts that are written for clarity there replaced by what a user who wants
speed writes, and the optimizer done the PyTorch way:

  * attention per sequence as one batched [B, H, S, S] product with a causal
    mask when every sequence has all its tokens (the dense layers), and one
    product per sequence when a MoD layer kept a subset (a loop over the B
    sequences, never over tokens), instead of one [H, N, N] product over the
    whole micro-batch with a block mask;
  * expert choice with one torch.topk over all experts of a group instead of
    a stable sort per expert (ties may break differently: no tie occurs in
    random fp32 router scores, and speed does not depend on it);
  * the expert FFNs stay as the reference has them: one torch.bmm per
    projection over the [E, k, d] tokens the experts chose;
  * persistent fp32 leaf parameters, torch.nn.utils.clip_grad_norm_ and
    torch.optim.AdamW(foreach=True) with decay only on the section-7 names.

bf16 is what such a user runs on a bf16-capable machine: the fp32 model under
torch.autocast(dtype=torch.bfloat16), which makes the GEMMs bf16 and keeps the
loss in fp32; the routers (MoE, MoD, auxiliary) stay fp32 as in MODEL_SPEC
section 7. On a GPU the step can also run under torch.compile.

Runs under Debian's python3 (PyTorch 1.13, CPU) and a GPU machine's PyTorch 2.
Benchmarks only, never a test oracle: the oracle is moma_reference itself.
"""
import contextlib
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test", "e2e"))
import moma_reference as R  # noqa: E402


def attention_by_sequence(q, k, v, seq, pos):
    """Causal attention of per-head q, k, v [n, H, hd] whose rows are each
    sequence's tokens, contiguous and in ascending `seq`: one product per
    sequence. Returns [n, H * hd]."""
    n, H, hd = q.shape
    parts = []
    bounds = torch.searchsorted(seq, torch.arange(int(seq[-1]) + 2, device=seq.device))
    for b in range(len(bounds) - 1):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        if lo == hi:
            continue
        qs, ks, vs = (t[lo:hi].transpose(0, 1) for t in (q, k, v))
        scores = (qs @ ks.transpose(1, 2)) / math.sqrt(hd)
        later = pos[None, lo:hi] > pos[lo:hi, None]
        probs = torch.softmax(scores.masked_fill(later, float("-inf")), dim=-1)
        parts.append((probs @ vs).transpose(0, 1).reshape(hi - lo, H * hd))
    return torch.cat(parts)


def attention(cfg, params, prefix, x, seq, pos):
    """Causal attention within each sequence, batched over sequences."""
    n, d = x.shape
    H = cfg["n_heads"]
    hd = d // H
    q, k, v = R.attention_heads(cfg, params, prefix, x, pos)
    S = cfg["seq_len"]
    if n % S == 0 and torch.equal(pos, torch.arange(S, device=pos.device).repeat(n // S)):
        B = n // S
        q, k, v = (t.view(B, S, H, hd).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [B, H, S, S]
        causal = torch.ones(S, S, dtype=torch.bool, device=x.device).triu(1)
        probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
        o = (probs @ v).transpose(1, 2).reshape(n, d)
    else:
        # A MoD subset: the kept tokens of each sequence are contiguous (the
        # selection is in ascending flat order).
        o = attention_by_sequence(q, k, v, seq, pos)
    return o @ params[prefix + "wo.weight"].t()


def expert_choice(scores, k):
    """[n, E] scores -> [E, k] row indices, each expert's top k in ascending order."""
    return torch.topk(scores.t(), k, dim=1).indices.sort(dim=1).values


def router_logits(v, weight):
    """A router's logits in fp32 also under autocast (MODEL_SPEC section 7)."""
    with torch.autocast(device_type=v.device.type, enabled=False):
        return v.float() @ weight.float().t()


class EagerStep:
    """One training step per call on a [B, S+1] token tensor: fp32, or with
    `autocast` the bf16 GEMMs of torch.autocast, on `device`; `compile` runs
    the forward under torch.compile (PyTorch 2, dynamic shapes: the tokens
    each expert group gets change from batch to batch)."""

    def __init__(self, cfg, seed=0, device="cpu", autocast=False, compile=False):
        R.attention = attention
        R.expert_choice = expert_choice
        R.router_logits = router_logits
        self.cfg = cfg
        self.device = torch.device(device)
        self.autocast = autocast
        self.params = {n: p.requires_grad_(True)
                       for n, p in self.init_params(cfg, seed).items()}
        self.loss = lambda tokens: R.forward(self.cfg, self.params, tokens)[0]
        if compile:
            self.loss = torch.compile(self.loss, dynamic=True)
        names = [n for n, _, _, aux in R.parameter_specs(cfg) if not aux]
        self.trained = [self.params[n] for n in names]
        train = cfg["train"]
        decay = [self.params[n] for n in names if R.has_weight_decay(n)]
        no_decay = [self.params[n] for n in names if not R.has_weight_decay(n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(train["weight_decay"])},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=R.lr_at(train, 1), betas=(float(train["beta1"]), float(train["beta2"])),
            eps=float(train["eps"]), foreach=True)
        self.step_count = 0

    def init_params(self, cfg, seed):
        """The reference's init on the CPU; on a GPU the same distributions
        drawn there (a 7B-parameter model in seconds, not minutes: the values
        do not matter for speed)."""
        if self.device.type == "cpu":
            return R.init_params(cfg, seed=seed)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        params = {}
        for name, shape, _, _ in R.parameter_specs(cfg):
            if name.endswith("norm.weight"):
                params[name] = torch.ones(shape, device=self.device)
            elif name.endswith(".bias"):
                params[name] = torch.zeros(shape, device=self.device)
            else:
                params[name] = torch.randn(shape, generator=generator,
                                           device=self.device) * 0.02
        return params

    def __call__(self, tokens):
        self.step_count += 1
        for group in self.optimizer.param_groups:
            group["lr"] = R.lr_at(self.cfg["train"], self.step_count)
        self.optimizer.zero_grad(set_to_none=True)
        tokens = tokens.to(self.device)
        # Tensors the model makes (index tables, masks) on the same device:
        # torch.device as a context needs PyTorch 2; on the CPU nothing to do.
        on_device = (torch.device(self.device) if self.device.type != "cpu"
                     else contextlib.nullcontext())
        precision = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
                     if self.autocast else contextlib.nullcontext())
        with on_device, precision:
            loss = self.loss(tokens)
        loss.backward()
        clip = float(self.cfg["train"]["grad_clip"])
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trained, clip)
        self.optimizer.step()
        return float(loss)
