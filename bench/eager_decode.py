"""Eager PyTorch generation of a MoMa model with auxiliary routers: the
baseline a performance-minded user would run instead of `momarun generate`.

The model is test/e2e/moma_reference.py with causal routing (MODEL_SPEC
section 6: every MoE group and MoD layer routes a token by its auxiliary
router), and attention against per-layer key/value caches of
[batch * seq_len, heads, head_dim] rows (row = sequence * seq_len +
position):

  * prefill: the prompts in one forward pass ([B, P] tokens); each layer
    writes the keys and values of the tokens it sees into its cache and
    attends within each sequence with a causal mask (one product per
    sequence, never a loop over tokens);
  * decode: one token per sequence and call; each layer writes its token's
    key and value, then attends over its sequence's cache rows up to the
    token's position (one batched product over the [B, seq_len] cache).

Runs under Debian's python3 (PyTorch 1.13). Benchmarks only.
"""
import contextlib
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "test", "e2e"))
import eager_step  # noqa: E402
import moma_reference as R  # noqa: E402


class EagerDecoder:
    def __init__(self, cfg, params, autocast=False):
        self.cfg = cfg
        self.params = params
        self.autocast = autocast
        B, S = cfg["train"]["batch_size"], cfg["seq_len"]
        H = cfg["n_heads"]
        hd = cfg["d_model"] // H
        L = cfg["n_layers"]
        self.keys = [torch.zeros(B * S, H, hd) for _ in range(L)]
        self.values = [torch.zeros(B * S, H, hd) for _ in range(L)]
        self.valid = [torch.zeros(B * S, dtype=torch.bool) for _ in range(L)]
        self.decoding = False

    def attention(self, cfg, params, prefix, x, seq, pos):
        """R.attention's signature, against the layer's cache."""
        layer = int(prefix.split(".")[1])
        S = cfg["seq_len"]
        n, d = x.shape
        if n == 0:  # a MoD layer that passed none of the tokens
            return x.new_zeros((0, d))
        H = cfg["n_heads"]
        hd = d // H
        q, k, v = R.attention_heads(cfg, params, prefix, x, pos)
        rows = seq * S + pos
        self.keys[layer][rows] = k.float()
        self.values[layer][rows] = v.float()
        self.valid[layer][rows] = True
        if not self.decoding:
            # The prompt: the cache holds exactly these tokens, so attend
            # among them, one causal product per sequence (each sequence's
            # rows are contiguous).
            o = eager_step.attention_by_sequence(q, k, v, seq, pos)
            return o @ params[prefix + "wo.weight"].t()
        B = cfg["train"]["batch_size"]
        keys = self.keys[layer].view(B, S, H, hd)[seq].to(q.dtype)  # [n, S, H, hd]
        values = self.values[layer].view(B, S, H, hd)[seq].to(q.dtype)
        scores = torch.einsum("nhd,nshd->nhs", q, keys) / math.sqrt(hd)
        allowed = self.valid[layer].view(B, S)[seq] & (
            torch.arange(S)[None, :] <= pos[:, None])  # [n, S]
        scores = scores.masked_fill(~allowed[:, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        o = torch.einsum("nhs,nshd->nhd", probs, values).reshape(n, d)
        return o @ params[prefix + "wo.weight"].t()

    def forward(self, ids, seq, pos, last_rows):
        """Logits [len(last_rows), V] of the rows `last_rows` after running
        the tokens `ids` (of sequences `seq` at positions `pos`)."""
        cfg, params = self.cfg, self.params
        R.attention = self.attention
        R.expert_choice = eager_step.expert_choice
        R.router_logits = eager_step.router_logits
        precision = (torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast
                     else contextlib.nullcontext())
        with torch.no_grad(), precision:
            h = params["tok_embeddings.weight"][ids]
            for layer in range(cfg["n_layers"]):
                run = R.mod_block if R.is_mod_layer(cfg, layer) else R.block
                h = run(cfg, params, layer, h, ids, seq, pos, causal={})
            h = R.rms_norm(h[last_rows], params["norm.weight"], cfg["norm_eps"])
            return (h @ params["output.weight"].t()).float()

    def prefill(self, prompts):
        """prompts: [B, P] ids -> logits [B, V] of each prompt's last token."""
        self.decoding = False
        B, P = prompts.shape
        ids = prompts.reshape(-1)
        seq = torch.arange(B).repeat_interleave(P)
        pos = torch.arange(P).repeat(B)
        return self.forward(ids, seq, pos, torch.arange(B) * P + P - 1)

    def decode(self, tokens, position):
        """tokens: [B] ids at `position` -> logits [B, V] of the next ones."""
        self.decoding = True
        B = tokens.shape[0]
        seq = torch.arange(B)
        pos = torch.full((B,), position, dtype=torch.int64)
        return self.forward(tokens, seq, pos, torch.arange(B))
