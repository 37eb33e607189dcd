"""End-to-end: momac compiles tiny models, momarun evaluates them, and every
number agrees with the PyTorch reference of MODEL_SPEC (moma_reference.py).

Needs the build (momac, momarun): MOMAC_BUILD_DIR, default ./build.
Run: /usr/bin/python3 -m unittest discover -s test/e2e -p 'test_momarun.py'
"""
import hashlib
import json
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import moma_reference as R  # noqa: E402

BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")
# MOMAC_E2E_TARGET=cuda runs these tests on CUDA artifacts (a GPU machine:
# with a GPU and PyTorch); the default is the CPU.
TARGET_ARGS = (["--target=" + os.environ["MOMAC_E2E_TARGET"]]
               if os.environ.get("MOMAC_E2E_TARGET") else [])
TINY = os.path.join(ROOT, "examples", "models", "tiny")

# The compiled forward pass is fp32; the reference runs in float64.
RELATIVE_TOLERANCE = 1e-4


def write_indexed_dataset(prefix, documents):
    """A Megatron-LM MMIDIDX v1 dataset (uint16 ids), as Megatron writes it."""
    with open(prefix + ".bin", "wb") as f:
        for doc in documents:
            f.write(np.asarray(doc, dtype=np.uint16).tobytes())
    sizes = np.array([len(d) for d in documents], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * 2]).astype(np.int64)
    doc_idx = np.arange(len(documents) + 1, dtype=np.int64)
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", 8))  # uint16
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())


def run(*args):
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def compile_variant(directory, variant, batch_size=2, target_args=None,
                    **overrides):
    """Compiles examples/models/tiny/<variant>.json with `overrides` (an
    object merges into the description's object of that key) and
    train.batch_size `batch_size` (the most sequences a batch may hold),
    for TARGET_ARGS unless `target_args` says otherwise; returns (artifact
    directory, reference config)."""
    with open(os.path.join(TINY, variant + ".json")) as f:
        desc = json.load(f)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(desc.get(key), dict):
            value = {**desc[key], **value}
        desc[key] = value
    desc.setdefault("train", {})["batch_size"] = batch_size
    tag = re.sub(r"[^A-Za-z0-9_.-]", "", variant + "".join(
        f"_{k}_{v}" for k, v in overrides.items())
        + ("" if batch_size == 2 else f"_b{batch_size}")
        + ("" if target_args is None else "".join(target_args)))
    path = os.path.join(directory, tag + ".json")
    with open(path, "w") as f:
        json.dump(desc, f)
    artifact = os.path.join(directory, tag)
    compile_cached(path, artifact,
                   TARGET_ARGS if target_args is None else target_args)
    return artifact, R.load_config(path)


# Compiled artifacts by (description, target, momac and runtime builds): many
# tests compile the same tiny model, and compiling is most of their time. momac is
# deterministic for one input, so a copy of the first compile stands for the
# others; a rebuilt momac or a rebuilt runtime archive that momac links into
# model.so (another size or mtime) starts a new set.
ARTIFACT_CACHE = os.path.join(BUILD, "e2e-artifact-cache")
LINKED_INTO_ARTIFACTS = [MOMAC] + [
    os.path.join(BUILD, "lib", f"libmomart_{part}.a") for part in ("cpu", "fsdp")]
# Only a build with CUDA has it.
LINKED_INTO_CUDA_ARTIFACTS = os.path.join(BUILD, "lib", "libmomart_cuda.a")


def compile_cached(description, artifact, target_args):
    with open(description, "rb") as f:
        text = f.read()
    for required in LINKED_INTO_ARTIFACTS:
        assert os.path.exists(required), f"{required}: not built"
    builds = [(os.stat(path).st_size, os.stat(path).st_mtime_ns)
              for path in LINKED_INTO_ARTIFACTS + [LINKED_INTO_CUDA_ARTIFACTS]
              if os.path.exists(path)]
    key = hashlib.sha256(text + repr((target_args, builds)).encode()).hexdigest()
    cached = os.path.join(ARTIFACT_CACHE, key[:32])
    if os.path.isdir(cached):
        shutil.copytree(cached, artifact, dirs_exist_ok=True)
        return
    run(MOMAC, description, "-o", artifact, *target_args)
    os.makedirs(ARTIFACT_CACHE, exist_ok=True)
    staging = f"{cached}.{os.getpid()}"
    shutil.copytree(artifact, staging)
    try:
        os.rename(staging, cached)  # atomic; another process may have won
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


class TemporaryDirectoryTestCase(unittest.TestCase):
    """Test classes that compile into one temporary directory, self.tmp."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()


class CompiledForwardMatchesReference(TemporaryDirectoryTestCase):
    """momarun eval of compiled tiny models against the reference forward."""

    def check(self, variant, batches=1, batch=None, compiled_batch=2,
              **overrides):
        artifact, cfg = compile_variant(self.tmp.name, variant,
                                        batch_size=compiled_batch, **overrides)
        params = R.init_params(cfg, seed=7)
        weights = os.path.join(self.tmp.name, variant + ".safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})

        # One document whose packing gives exactly the batches we check.
        batch_args = ["--batch-size", str(batch)] if batch else []
        batch, seq = batch or cfg["train"]["batch_size"], cfg["seq_len"]
        rng = np.random.default_rng(3)
        stream = rng.integers(0, cfg["vocab_size"], size=batches * batch * seq + 1)
        prefix = os.path.join(self.tmp.name, variant + "-data")
        write_indexed_dataset(prefix, [stream])

        out = json.loads(run(MOMARUN, "eval", artifact, "--weights", weights,
                             "--data", prefix, "--batches", str(batches),
                             *batch_args, "--json"))

        names = R.modality_names(cfg)
        losses, sums, counts = [], {m: 0.0 for m in names}, {m: 0 for m in names}
        modality_of = R.modality_of_id(cfg)
        with torch.no_grad():
            for b in range(batches):
                rows = [stream[(b * batch + r) * seq:(b * batch + r) * seq + seq + 1]
                        for r in range(batch)]
                tokens = torch.tensor(np.stack(rows), dtype=torch.long)
                loss, per = R.forward(cfg, {k: v.double() for k, v in params.items()},
                                      tokens)
                losses.append(float(loss))
                target_modality = modality_of[tokens[:, 1:].reshape(-1)]
                for index, m in enumerate(names):
                    n = int((target_modality == index).sum())
                    sums[m] += float(per[m]) * n
                    counts[m] += n
        self.assertAlmostEqual(out["loss"], np.mean(losses),
                               delta=RELATIVE_TOLERANCE * abs(np.mean(losses)))
        for m in names:
            expected = sums[m] / counts[m] if counts[m] else 0.0
            self.assertEqual(out["targets." + m], counts[m])
            self.assertAlmostEqual(out["loss." + m], expected,
                                   delta=RELATIVE_TOLERANCE * abs(expected) + 1e-7,
                                   msg=f"loss.{m}")
        return out

    def test_dense(self):
        self.check("dense")


    def test_dense_pre_norm(self):
        self.check("dense", norm="pre")

    def test_moe_1t1i(self):
        self.check("moe_1t1i")

    def test_moe_4t4i(self):
        self.check("moe_4t4i")

    def test_moe_4t4i_pre_norm(self):
        self.check("moe_4t4i", norm="pre")

    def test_moe_8x(self):
        self.check("moe_8x")

    def test_moe_7t1i_without_qk_norm(self):
        self.check("moe_7t1i", qk_norm=False)

    def test_mod_moe_4t4i(self):
        self.check("mod_moe_4t4i")

    def test_mod_moe_4t4i_with_aux_routers_pre_norm(self):
        self.check("mod_moe_4t4i_aux", norm="pre")

    def test_empty_token_ranges_is_the_default_modality(self):
        # MODEL_SPEC section 1: "token_ranges": [] as if the key were omitted.
        out = self.check("moe_1t1i", modalities=[
            {"name": "text", "token_ranges": []},
            {"name": "image", "token_ranges": [[256, 512]]}])
        self.assertGreater(out["targets.text"], 0)

    def test_batches_of_three_sequences(self):
        out = self.check("mod_moe_4t4i", batches=2, batch=3, compiled_batch=4)
        self.assertEqual(out["sequences"], 6)

    def test_per_modality_losses_pool_over_batches(self):
        out = self.check("moe_1t1i", batches=3)
        self.assertEqual(out["batches"], 3)
        self.assertEqual(out["sequences"], 6)


class CompiledGradMatchesReference(TemporaryDirectoryTestCase):
    """momarun grad against PyTorch autograd of the reference (float64)."""

    def check(self, variant, make_tokens=None, edit_params=None, noise=None,
              batch=None, compiled_batch=2, **overrides):
        """momarun grad against R.grad; `noise(cfg)` gives router logit noise
        [n_layers, B*S, max experts] for both (momarun grad --noise). `batch`
        sequences (default: all `compiled_batch` the artifact takes)."""
        artifact, cfg = compile_variant(self.tmp.name, variant,
                                        batch_size=compiled_batch, **overrides)
        params = R.init_params(cfg, seed=11)
        if edit_params:
            edit_params(params)
        weights = os.path.join(artifact, "w.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        batch, seq = batch or cfg["train"]["batch_size"], cfg["seq_len"]
        rng = np.random.default_rng(5)
        tokens = (make_tokens(cfg, rng, batch, seq) if make_tokens else
                  rng.integers(0, cfg["vocab_size"], size=(batch, seq + 1)))
        token_file = os.path.join(artifact, "tokens.bin")
        R.write_tokens(token_file, torch.tensor(np.asarray(tokens), dtype=torch.int32))
        out = os.path.join(artifact, "grad.safetensors")
        noise_args, noise_tensor = [], None
        if noise:
            noise_tensor = noise(cfg)
            noise_file = os.path.join(artifact, "noise.bin")
            with open(noise_file, "wb") as f:
                f.write(noise_tensor.float().numpy().tobytes())
            noise_args = ["--noise", noise_file]
        run(MOMARUN, "grad", artifact, "--weights", weights, "--tokens",
            token_file, "--out", out, *noise_args)

        got = R.read_safetensors(out)
        expected = R.grad(cfg, params, torch.tensor(np.asarray(tokens), dtype=torch.long),
                          gumbel_generator=noise_tensor)
        self.assertEqual(sorted(got), sorted(expected))
        for name, value in expected.items():
            value = value.double()
            scale = float(value.abs().max()) if value.numel() else 0.0
            error = float((got[name].double() - value).abs().max()) if value.numel() else 0.0
            if scale == 0.0:
                self.assertLessEqual(error, 1e-7, name)
            else:
                self.assertLessEqual(error / scale, RELATIVE_TOLERANCE, name)
        return got

    def test_dense(self):
        self.check("dense")

    # MODEL_SPEC section 8: any batch size up to the compiled train.batch_size
    # (4 here), routing over exactly the sequences given (no padding).
    def test_one_sequence(self):
        self.check("mod_moe_4t4i", batch=1, compiled_batch=4)

    def test_three_sequences(self):
        self.check("moe_4t4i", batch=3, compiled_batch=4)

    def test_all_four_sequences(self):
        self.check("moe_4t4i", compiled_batch=4)

    def test_three_sequences_with_router_noise(self):
        def logistic(cfg):
            experts = max(g["experts"] for g in cfg["moe"]["groups"])
            u = torch.rand(cfg["n_layers"], 3 * cfg["seq_len"], experts,
                           generator=torch.Generator().manual_seed(4),
                           dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
            return torch.log(u) - torch.log1p(-u)
        self.check("mod_moe_4t4i", noise=logistic, batch=3, compiled_batch=4,
                   moe={"gumbel": True})

    def test_dense_pre_norm(self):
        self.check("dense", norm="pre")

    def test_moe_1t1i(self):
        self.check("moe_1t1i")

    def test_moe_1t1i_pre_norm(self):
        self.check("moe_1t1i", norm="pre")

    def test_moe_4t4i(self):
        self.check("moe_4t4i")

    def test_moe_4t4i_pre_norm(self):
        self.check("moe_4t4i", norm="pre")

    def test_moe_8x(self):
        self.check("moe_8x")

    def test_moe_8x_pre_norm(self):
        self.check("moe_8x", norm="pre")

    def test_mod_moe_4t4i_with_aux_routers(self):
        got = self.check("mod_moe_4t4i_aux")
        # Auxiliary routers are not in the loss: exactly zero gradients.
        aux = [n for n in got if "aux_router" in n]
        self.assertTrue(aux)
        for name in aux:
            self.assertEqual(float(got[name].abs().max()), 0.0, name)

    def test_router_noise_is_added_to_the_expert_router_logits(self):
        # moe.gumbel: the noisy score selects and gates; MoD routers get none.
        def logistic(cfg):
            experts = max(g["experts"] for g in cfg["moe"]["groups"])
            tokens = cfg["train"]["batch_size"] * cfg["seq_len"]
            u = torch.rand(cfg["n_layers"], tokens, experts,
                           generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
            return torch.log(u) - torch.log1p(-u)
        noisy = self.check("mod_moe_4t4i", noise=logistic, moe={"gumbel": True})
        clean = self.check("mod_moe_4t4i", moe={"gumbel": True})
        # The noise moved the routing and the gates, so the numbers differ.
        name = "grad.layers.0.moe.text.router.weight"
        change = float((noisy[name] - clean[name]).abs().max())
        self.assertGreater(change, 0.05 * float(clean[name].abs().max()))

    def test_group_with_no_tokens(self):
        # Only text ids (< 256): the image group is empty in every layer.
        got = self.check("moe_4t4i", make_tokens=lambda cfg, rng, b, s:
                         rng.integers(0, 256, size=(b, s + 1)))
        self.assertEqual(float(got["grad.layers.0.moe.image.w1"].abs().max()), 0.0)

    def test_group_with_fewer_tokens_than_experts(self):
        def few_image_tokens(cfg, rng, b, s):
            tokens = rng.integers(0, 256, size=(b, s + 1))
            tokens[0, 3] = 300  # two image inputs for four image experts
            tokens[1, 7] = 400
            return tokens
        self.check("moe_4t4i", make_tokens=few_image_tokens)

    def test_mod_layer_group_with_no_tokens(self):
        # The MoD layer's groups (padded on the CUDA target) with an empty
        # image group: every slot of its experts is padding.
        got = self.check("mod_moe_4t4i", make_tokens=lambda cfg, rng, b, s:
                         rng.integers(0, 256, size=(b, s + 1)))
        self.assertEqual(float(got["grad.layers.0.moe.image.w1"].abs().max()), 0.0)

    def test_mod_layer_group_with_fewer_tokens_than_experts(self):
        # Image tokens that the MoD router may or may not keep: groups of
        # any size from 0 up, most with padding rows and slots.
        def some_image_tokens(cfg, rng, b, s):
            tokens = rng.integers(0, 256, size=(b, s + 1))
            tokens[:, ::5] = rng.integers(256, cfg["vocab_size"],
                                          size=tokens[:, ::5].shape)
            return tokens
        self.check("mod_moe_4t4i_aux", make_tokens=some_image_tokens)

    def test_ties_go_to_the_lower_index(self):
        def zero_routers(params):
            for name in params:
                if name.endswith("router.weight"):
                    params[name].zero_()  # every score is exactly 0.5
        self.check("mod_moe_4t4i", edit_params=zero_routers)

    def test_non_finite_router_scores_route_without_crashing(self):
        # NaN and Inf scores sort after (NaN) or with (Inf) the finite ones;
        # the selection never leaves a slot empty, so no index goes out of
        # range and the step ends with non-finite numbers, not a crash.
        artifact, cfg = compile_variant(self.tmp.name, "mod_moe_4t4i")
        token_file = os.path.join(artifact, "tokens.bin")
        rng = np.random.default_rng(5)
        tokens = rng.integers(0, cfg["vocab_size"],
                              size=(cfg["train"]["batch_size"], cfg["seq_len"] + 1))
        R.write_tokens(token_file, torch.tensor(tokens, dtype=torch.int32))
        for value in (float("nan"), float("inf"), float("-inf")):
            params = R.init_params(cfg, seed=11)
            params["layers.0.moe.text.router.weight"][0, :] = value
            params["layers.0.mod.router.weight"][0, :3] = value
            weights = os.path.join(artifact, "w.safetensors")
            R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
            out = os.path.join(artifact, "grad.safetensors")
            result = subprocess.run(
                [MOMARUN, "grad", artifact, "--weights", weights, "--tokens",
                 token_file, "--out", out], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, f"{value}: {result.stderr}")
            got = R.read_safetensors(out)
            self.assertIn("loss", got)


class CompiledBf16GradMatchesReference(TemporaryDirectoryTestCase):
    """train.precision "bf16" (MODEL_SPEC section 7): momarun grad against the
    reference whose GEMMs take bf16-rounded operands (R.gemm_of), float64
    otherwise.

    The tolerance this justifies: a GEMM operand that two correct
    implementations compute a few f32 ulps apart can round to neighbouring
    bf16 values, 2^-8 apart, and that difference travels on. The reference's
    own float32 and float64 runs with bf16 operands differ by up to 1.2e-2
    of a gradient's largest entry on tiny dense, so 1e-4 element-wise cannot
    hold for any implementation. Checked instead: the loss within 1e-4
    relative (measured: 1e-5); every gradient within 2e-2 norm-wise relative
    (measured: at most 7e-3); and, over all gradients together, momarun at
    least 2x closer to the bf16 reference than to the fp32 one (measured:
    3-4x), which fp32 GEMMs would fail."""

    def compiled_grad(self, variant, batch=None, edit_params=None,
                      target_args=None, env=None):
        """(momarun grad of `variant` in bf16, its config, its parameters,
        its tokens)."""
        artifact, cfg = compile_variant(self.tmp.name, variant, batch_size=4,
                                        target_args=target_args,
                                        train={"precision": "bf16"})
        params = R.init_params(cfg, seed=11)
        if edit_params:
            edit_params(params)
        weights = os.path.join(artifact, "w.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        batch = batch or cfg["train"]["batch_size"]
        rng = np.random.default_rng(5)
        tokens = rng.integers(0, cfg["vocab_size"], size=(batch, cfg["seq_len"] + 1))
        token_file = os.path.join(artifact, "tokens.bin")
        R.write_tokens(token_file, torch.tensor(tokens, dtype=torch.int32))
        out = os.path.join(artifact, "grad.safetensors")
        result = subprocess.run(
            [MOMARUN, "grad", artifact, "--weights", weights, "--tokens",
             token_file, "--out", out], capture_output=True, text=True,
            env=dict(os.environ, **(env or {})))
        self.assertEqual(result.returncode, 0, result.stderr)
        return R.read_safetensors(out), cfg, params, tokens

    def check(self, variant, batch=None, edit_params=None, target_args=None):
        got, cfg, params, tokens = self.compiled_grad(
            variant, batch, edit_params, target_args)
        tokens = torch.tensor(tokens, dtype=torch.long)
        bf16 = R.grad(cfg, params, tokens)
        fp32_cfg = dict(cfg, train=dict(cfg["train"]))
        fp32_cfg["train"]["precision"] = "fp32"
        fp32 = R.grad(fp32_cfg, params, tokens)
        self.assertEqual(sorted(got), sorted(bf16))
        to_bf16 = to_fp32 = total = 0.0
        for name, value in bf16.items():
            mine = got[name].double()
            value = value.double()
            if not name.startswith("grad."):
                self.assertLessEqual(abs(float(mine) - float(value)),
                                     1e-4 * abs(float(value)), name)
                continue
            error = float((mine - value).norm())
            size = float(value.norm())
            self.assertLessEqual(error, 2e-2 * size + 1e-12, name)
            to_bf16 += error ** 2
            to_fp32 += float((mine - fp32[name].double()).norm()) ** 2
            total += size ** 2
        self.assertLessEqual(2 * to_bf16 ** 0.5, to_fp32 ** 0.5,
                             "momarun's bf16 gradient is not clearly closer to the "
                             "bf16 reference than to the fp32 one")

    def test_dense(self):
        self.check("dense")

    def test_moe_4t4i_three_sequences(self):
        self.check("moe_4t4i", batch=3)

    def test_mod_moe_4t4i_with_aux_routers(self):
        # Routing chooses among close scores, and a rounding difference can
        # swap two tokens at a top-k boundary (the reference against itself
        # in float32 does on some batches). Routers 20x larger spread the
        # scores so that these tokens route the same in both.
        def wide_routers(params):
            for name in params:
                if name.endswith("router.weight"):  # MoE and MoD, not aux
                    params[name].mul_(20)
        self.check("mod_moe_4t4i_aux", edit_params=wide_routers)

    @unittest.skipIf(TARGET_ARGS, "the CPU target's choice of bf16 GEMM")
    def test_both_cpu_bf16_gemms(self):
        """momac --cpu-bf16-gemm: bf16 operands through the runtime's bf16
        GEMM match the reference too; and the f32 GEMMs on rounded operands
        kept in f32 compute exactly what that GEMM computes on widened
        operands (the same sgemm on the same values: equal bit for bit)."""
        self.check("moe_4t4i", target_args=["--cpu-bf16-gemm=bf16"])
        kept_in_f32, *_ = self.compiled_grad(
            "moe_4t4i", target_args=["--cpu-bf16-gemm=f32"])
        widened, *_ = self.compiled_grad(
            "moe_4t4i", target_args=["--cpu-bf16-gemm=bf16"],
            env={"MOMA_BF16_GEMM": "widened"})
        self.assertEqual(sorted(kept_in_f32), sorted(widened))
        for name, value in kept_in_f32.items():
            self.assertTrue(torch.equal(value, widened[name]), name)
        # momarun's first line names the bf16 GEMM a run uses.
        for choice, expected in [
                ("f32", r"; bf16 GEMM: f32 sgemm on bf16-rounded operands kept "
                        r"in f32 \(momac --cpu-bf16-gemm=f32\)$"),
                ("bf16", r"; bf16 GEMM: (oneDNN|f32 sgemm on widened operands)")]:
            artifact, cfg = compile_variant(
                self.tmp.name, "moe_4t4i", batch_size=4,
                target_args=[f"--cpu-bf16-gemm={choice}"],
                train={"precision": "bf16"})
            prefix = os.path.join(artifact, "data")
            write_indexed_dataset(prefix, [np.arange(9 * cfg["seq_len"]) % 500])
            out = run(MOMARUN, "train", artifact, "--data", prefix, "--steps",
                      "1", "--out", os.path.join(artifact, "run"))
            self.assertRegex(out.splitlines()[0], expected)


class Upcycling(TemporaryDirectoryTestCase):
    """momarun upcycle (MODEL_SPEC section 7) against the reference's
    construction (R.upcycle), and stage 2's training from it."""

    TRAIN = {"lr": 1e-3, "warmup_steps": 2, "total_steps": 20}

    def compile(self, variant):
        return compile_variant(self.tmp.name, variant, train=dict(self.TRAIN))

    def stage_one(self, variant, steps=3):
        """Trains `variant` for `steps` steps on a random stream; returns
        (artifact, cfg, checkpoint, data prefix, stream)."""
        artifact, cfg = self.compile(variant)
        seq = cfg["seq_len"]
        stream = np.random.default_rng(4).integers(0, cfg["vocab_size"],
                                                   size=40 * seq + 1)
        prefix = os.path.join(artifact, "data")
        write_indexed_dataset(prefix, [stream])
        run_dir = os.path.join(artifact, "stage1")
        run(MOMARUN, "train", artifact, "--data", prefix, "--steps", str(steps),
            "--out", run_dir)
        return artifact, cfg, os.path.join(run_dir, "checkpoint.safetensors"), prefix, stream

    def upcycled(self, checkpoint, target, seed=5):
        """momarun upcycle into artifact `target`, and the reference's
        construction from the same checkpoint and the same fresh routers
        (`momarun init --seed` of the target)."""
        out = os.path.join(target, f"upcycled_{seed}.safetensors")
        run(MOMARUN, "upcycle", "--from", checkpoint, "--to", target, "-o", out,
            "--seed", str(seed))
        fresh_file = os.path.join(target, f"init_{seed}.safetensors")
        run(MOMARUN, "init", target, "-o", fresh_file, "--seed", str(seed))
        source = {k: v for k, v in R.read_safetensors(checkpoint).items()
                  if not k.startswith("optim.")}
        cfg = R.load_config(os.path.join(target, "model.json"))
        expected = R.upcycle(cfg, source, R.read_safetensors(fresh_file))
        return out, R.read_safetensors(out), expected

    def assert_same(self, got, expected):
        self.assertEqual(sorted(got), sorted(expected))
        for name, value in expected.items():
            self.assertTrue(torch.equal(got[name], value.float()), name)

    def test_moe_1t1i_to_4t4i_continues_the_data_with_a_fresh_schedule(self):
        source_art, source_cfg, checkpoint, prefix, stream = self.stage_one("moe_1t1i")
        target, cfg = self.compile("moe_4t4i")
        weights, got, expected = self.upcycled(checkpoint, target)
        self.assert_same(got, expected)
        # Each expert is its group's stage-1 FFN; routers are N(0, 0.02).
        trained = R.read_safetensors(checkpoint)
        for e in range(4):
            self.assertTrue(torch.equal(got["layers.1.moe.image.w2"][e],
                                        trained["layers.1.moe.image.w2"][0]))
        router = got["layers.0.moe.text.router.weight"]
        self.assertAlmostEqual(float(router.std()), 0.02, delta=0.004)

        run_dir = os.path.join(target, "stage2")
        run(MOMARUN, "train", target, "--data", prefix, "--steps", "1", "--out",
            run_dir, "--init", weights, "--data-position-from", checkpoint)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        # Stage 1 consumed 3 steps of 2 sequences: stage 2 starts at sequence
        # 6, at step 1 of a fresh schedule.
        seq = cfg["seq_len"]
        tokens = torch.tensor(np.stack([stream[r * seq:r * seq + seq + 1]
                                        for r in (6, 7)]), dtype=torch.long)
        loss, _ = R.forward(cfg, {k: v.double() for k, v in got.items()}, tokens)
        self.assertEqual(metrics[0]["step"], 1)
        self.assertAlmostEqual(metrics[0]["lr"], R.lr_at(cfg["train"], 1))
        self.assertLessEqual(abs(metrics[0]["loss"] - float(loss)), 1e-4 * float(loss))
        position = R.read_safetensors(os.path.join(run_dir, "checkpoint.safetensors"),
                                      with_metadata=True)[1]["data_position"]
        self.assertEqual(int(position), 8)

    def test_dense_to_1t1i_computes_the_dense_model(self):
        dense, dense_cfg = self.compile("dense")
        weights = os.path.join(dense, "w.safetensors")
        run(MOMARUN, "init", dense, "-o", weights, "--seed", "3")
        target, cfg = self.compile("moe_1t1i")
        upcycled, got, expected = self.upcycled(weights, target)
        self.assert_same(got, expected)
        # One expert per group, no router: the same function as the dense FFN.
        tokens = os.path.join(target, "tokens.bin")
        R.write_tokens(tokens, torch.as_tensor(R.random_tokens(cfg, 2, seed=8)).int())
        losses = []
        for artifact, w in ((dense, weights), (target, upcycled)):
            out = os.path.join(artifact, "grad.safetensors")
            run(MOMARUN, "grad", artifact, "--weights", w, "--tokens", tokens,
                "--out", out)
            losses.append(float(R.read_safetensors(out)["loss"]))
        self.assertLessEqual(abs(losses[0] - losses[1]), 1e-6 * losses[0])

    def test_mod_moe_1t1i_to_4t4i_with_fresh_aux_routers(self):
        _, _, checkpoint, _, _ = self.stage_one("mod_moe_1t1i", steps=1)
        target, cfg = self.compile("mod_moe_4t4i_aux")
        _, got, expected = self.upcycled(checkpoint, target, seed=9)
        self.assert_same(got, expected)

    def test_models_that_do_not_correspond_are_refused(self):
        four, _ = self.compile("moe_4t4i")
        one, _ = self.compile("moe_1t1i")
        mod, _ = self.compile("mod_moe_4t4i")
        weights = os.path.join(four, "w.safetensors")
        run(MOMARUN, "init", four, "-o", weights)
        mod_weights = os.path.join(mod, "w.safetensors")
        run(MOMARUN, "init", mod, "-o", mod_weights)
        out = os.path.join(self.tmp.name, "never.safetensors")
        cases = [
            # Fewer experts than the checkpoint: not an upcycling.
            (weights, one, "'layers.0.moe.text.w1' has shape [4, 344, 128], but the "
                           "target's 'layers.0.moe.text.w1' needs [1, 344, 128]"),
            # MoD layers from a checkpoint without them.
            (weights, mod, "lacks 'layers.0.mod.router.weight' (shape [1, 128]), which "
                           "the target model has and upcycling does not create"),
            # Layers of the checkpoint the target does not have.
            (mod_weights, four, "has no counterpart in the target model"),
        ]
        for source, target, message in cases:
            result = subprocess.run([MOMARUN, "upcycle", "--from", source, "--to",
                                     target, "-o", out], capture_output=True, text=True)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertIn(message, result.stderr)
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            self.assertFalse(os.path.exists(out))
        # Initial weights are not a checkpoint: they have no data position.
        result = subprocess.run([MOMARUN, "train", four, "--data", "unused",
                                 "--steps", "1", "--out", os.path.join(self.tmp.name, "r"),
                                 "--init", weights, "--data-position-from", weights],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no data_position", result.stderr)


class CausalEvaluation(TemporaryDirectoryTestCase):
    """momarun eval --causal (@forward_causal) against the reference's causal
    routing (MODEL_SPEC section 6): a token goes to an expert, or through a
    MoD block, iff its auxiliary score is above 0.5."""

    def check(self, variant, batch=2, **overrides):
        artifact, cfg = compile_variant(self.tmp.name, variant, batch_size=batch,
                                        **overrides)
        params = R.init_params(cfg, seed=13)
        # Aux scores at init sit at 0.5 +- 1e-4, where float32 and float64
        # can fall on different sides: spread them (100x on both matrices
        # puts them at logits of several units).
        for name in params:
            if ".aux_router." in name:
                params[name] *= 100
        weights = os.path.join(artifact, "w.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        seq = cfg["seq_len"]
        tokens = np.asarray(R.random_tokens(cfg, batch, seed=2))
        prefix = os.path.join(artifact, "data")
        # One stream whose first sequences are these rows (they share one
        # token at each boundary, as packing does).
        stream = np.concatenate([tokens[0]] + [row[1:] for row in tokens[1:]])
        for r in range(1, batch):
            tokens[r] = stream[r * seq:r * seq + seq + 1]
        write_indexed_dataset(prefix, [stream])
        out = json.loads(run(MOMARUN, "eval", artifact, "--weights", weights,
                             "--data", prefix, "--batches", "1", "--causal",
                             "--json"))
        double = {k: v.double() for k, v in params.items()}
        t = torch.as_tensor(tokens).long()
        causal = {}
        loss, per_modality = R.forward(cfg, double, t, causal=causal)
        batch_loss, _ = R.forward(cfg, double, t)
        self.assertLessEqual(abs(out["causal.loss"] - float(loss)), 1e-4 * float(loss))
        self.assertLessEqual(abs(out["loss"] - float(batch_loss)), 1e-4 * float(batch_loss))
        for name, value in per_modality.items():
            self.assertLessEqual(abs(out["causal.loss." + name] - float(value)),
                                 1e-4 * float(value), name)
        got = {k: v for k, v in out.items() if k.startswith("disagreement.")}
        self.assertEqual(sorted(got), sorted(causal))
        for name, value in causal.items():
            self.assertAlmostEqual(got[name], value, places=6, msg=name)
        # Causal routing is a different computation: its loss differs.
        self.assertNotAlmostEqual(float(loss), float(batch_loss), places=4)
        return out

    def test_mod_moe_4t4i_with_aux_routers(self):
        out = self.check("mod_moe_4t4i_aux")
        self.assertIn("disagreement.layers.0.mod", out)
        self.assertIn("disagreement.layers.3.moe.image", out)

    def test_moe_4t4i_with_aux_routers_pre_norm(self):
        self.check("moe_4t4i", batch=3, aux_routers=True, norm="pre")

    def test_a_model_without_aux_routers_is_refused(self):
        artifact, cfg = compile_variant(self.tmp.name, "moe_4t4i")
        weights = os.path.join(artifact, "w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        result = subprocess.run([MOMARUN, "eval", artifact, "--weights", weights,
                                 "--data", "unused", "--causal"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("has no auxiliary routers to route causally with", result.stderr)


class AuxRouterTraining(TemporaryDirectoryTestCase):
    """momarun grad --aux and train-aux (MODEL_SPEC section 6) against the
    reference's BCE of the auxiliary routers on the frozen model's batch
    routing (R.aux_grad)."""

    def prepare(self, variant, **overrides):
        artifact, cfg = compile_variant(self.tmp.name, variant, **overrides)
        params = R.init_params(cfg, seed=17)
        weights = os.path.join(artifact, "w.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        return artifact, cfg, params, weights

    def check_gradients(self, variant, **overrides):
        artifact, cfg, params, weights = self.prepare(variant, **overrides)
        tokens = np.asarray(R.random_tokens(cfg, 2, seed=6))
        token_file = os.path.join(artifact, "tokens.bin")
        R.write_tokens(token_file, torch.as_tensor(tokens).int())
        out = os.path.join(artifact, "aux.safetensors")
        run(MOMARUN, "grad", artifact, "--aux", "--weights", weights, "--tokens",
            token_file, "--out", out)
        got = R.read_safetensors(out)
        expected = R.aux_grad(cfg, params, tokens)
        self.assertEqual(sorted(k for k in got if not k.startswith("confusion.")),
                         sorted(expected))
        for name, value in expected.items():
            value = value.double()
            scale = float(value.abs().max())
            error = float((got[name].double() - value).abs().max())
            self.assertLessEqual(error, RELATIVE_TOLERANCE * scale, name)
        # Confusion counts: [true positives, predicted, chosen, decisions].
        counts = got["confusion.layers.0.mod"]
        self.assertEqual(float(counts[3]), 2 * cfg["seq_len"])
        self.assertEqual(float(counts[2]), math.ceil(0.25 * 2 * cfg["seq_len"]))
        self.assertLessEqual(float(counts[0]), min(float(counts[1]), float(counts[2])))

    def test_gradients_match_the_reference_bce(self):
        self.check_gradients("mod_moe_4t4i_aux")

    def test_gradients_match_the_reference_bce_pre_norm(self):
        self.check_gradients("mod_moe_4t4i_aux", norm="pre")

    def test_train_aux_learns_the_batch_choices_and_leaves_the_model_alone(self):
        artifact, cfg, params, weights = self.prepare("mod_moe_4t4i_aux")
        seq = cfg["seq_len"]
        stream = np.concatenate([np.asarray(R.random_tokens(cfg, 1, seed=s))[0]
                                 for s in range(12)])
        prefix = os.path.join(artifact, "data")
        write_indexed_dataset(prefix, [stream])
        run_dir = os.path.join(artifact, "aux")
        run(MOMARUN, "train-aux", artifact, "--weights", weights, "--data", prefix,
            "--steps", "40", "--out", run_dir)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        self.assertEqual(len(metrics), 40)
        # Step 1 sees the initial weights: the reference's objective.
        tokens = np.stack([stream[r * seq:r * seq + seq + 1] for r in range(2)])
        expected = R.aux_grad(cfg, params, tokens)
        self.assertLessEqual(abs(metrics[0]["aux_loss"] - float(expected["aux_loss"])),
                             1e-4 * float(expected["aux_loss"]))
        for key in ("bce.layers.0.mod", "accuracy.layers.0.mod",
                    "precision.layers.2.mod", "recall.layers.3.moe.image"):
            self.assertIn(key, metrics[0])
        # The BCE falls; only the auxiliary routers changed.
        self.assertLess(sum(m["aux_loss"] for m in metrics[-5:]) / 5,
                        0.9 * metrics[0]["aux_loss"])
        trained = R.read_safetensors(os.path.join(run_dir, "weights.safetensors"))
        for name, value in params.items():
            same = torch.equal(trained[name], value.float())
            self.assertEqual(same, not R.is_aux(name), name)

    def test_a_model_without_aux_routers_is_refused(self):
        artifact, cfg, params, weights = self.prepare("moe_4t4i")
        result = subprocess.run([MOMARUN, "train-aux", artifact, "--weights", weights,
                                 "--data", "unused", "--steps", "1", "--out",
                                 os.path.join(self.tmp.name, "never")],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("has no auxiliary routers to train", result.stderr)


class Generation(TemporaryDirectoryTestCase):
    """momarun generate (@prefill and @decode_step with key/value caches)
    against a full forward pass with causal routing (MODEL_SPEC section 6):
    the prompts in one call or token by token, the logits at every position
    are those of the whole sequence."""

    def prepare(self, variant, **overrides):
        artifact, cfg = compile_variant(self.tmp.name, variant, **overrides)
        params = R.init_params(cfg, seed=13)
        for name in params:  # aux scores well away from the 0.5 threshold
            if ".aux_router." in name:
                params[name] *= 100
        weights = os.path.join(artifact, "w.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        return artifact, cfg, params, weights

    def generate(self, artifact, weights, prompts, *extra):
        path = os.path.join(artifact, "prompts.jsonl")
        with open(path, "w") as f:
            for prompt in prompts:
                f.write(json.dumps({"tokens": [int(t) for t in prompt]}) + "\n")
        return run(MOMARUN, "generate", artifact, "--weights", weights, "--prompt",
                   path, *extra)

    def reference_logits(self, cfg, params, sequence):
        full = list(sequence) + [0] * (cfg["seq_len"] + 1 - len(sequence))
        _, _, details = R.forward(cfg, {k: v.double() for k, v in params.items()},
                                  torch.tensor([full]), details=True, causal={})
        return details["logits"].numpy()[:len(sequence) - 1]

    def check(self, variant, **overrides):
        artifact, cfg, params, weights = self.prepare(variant, **overrides)
        tokens = np.asarray(R.random_tokens(cfg, 1, seed=3))[0]
        prompts = [tokens[:10], tokens[20:24]]
        logits_file = os.path.join(artifact, "logits.bin")
        vocab = cfg["vocab_size"]
        runs = {}
        # @prefill (the prompts in one call), then token by token.
        for mode in ([], ["--prompt-by-token"]):
            out = self.generate(artifact, weights, prompts, "--max-new", "6",
                                "--temperature", "0", "--logits", logits_file, *mode)
            generated = [[int(t) for t in line.split()] for line in out.splitlines()]
            self.assertEqual([len(g) for g in generated], [6, 6])
            got = np.fromfile(logits_file, dtype=np.float32).reshape(-1, vocab)
            runs[bool(mode)] = (generated, got)
        self.assertEqual(runs[False][0], runs[True][0])
        for by_token, (generated, got) in runs.items():
            for prompt, new, check_logits in ((prompts[0], generated[0], True),
                                              (prompts[1], generated[1], False)):
                sequence = list(prompt) + new
                expected = self.reference_logits(cfg, params, sequence)
                if check_logits:
                    # In one call, the logits from the prompt's last token on.
                    if not by_token:
                        expected = expected[len(prompt) - 1:]
                    self.assertEqual(got.shape, expected.shape)
                    error = np.abs(got - expected).max() / np.abs(expected).max()
                    self.assertLessEqual(error, RELATIVE_TOLERANCE)
                # Greedy: each new token is the reference's most likely one.
                full = self.reference_logits(cfg, params, sequence)
                greedy = [int(np.argmax(full[i]))
                          for i in range(len(prompt) - 1, len(sequence) - 1)]
                self.assertEqual(greedy, new)

    def test_decode_equals_a_causal_forward_pass_mod_moe_4t4i(self):
        self.check("mod_moe_4t4i_aux")

    def test_decode_equals_a_causal_forward_pass_moe_4t4i_pre_norm(self):
        self.check("moe_4t4i", aux_routers=True, norm="pre")

    def test_sampling_is_seeded_and_top_p_narrows_it(self):
        artifact, cfg, params, weights = self.prepare("mod_moe_4t4i_aux")
        prompt = [np.asarray(R.random_tokens(cfg, 1, seed=4))[0][:5]]
        sample = lambda *extra: self.generate(artifact, weights, prompt,
                                              "--max-new", "12", *extra)
        self.assertEqual(sample("--seed", "7"), sample("--seed", "7"))
        # Each prompt has its own generator: alone or next to another
        # prompt, it samples the same tokens.
        other = np.asarray(R.random_tokens(cfg, 1, seed=5))[0][:8]
        together = self.generate(artifact, weights, prompt + [other], "--max-new", "12",
                                 "--seed", "7")
        self.assertEqual(together.splitlines()[0], sample("--seed", "7").strip())
        self.assertNotEqual(sample("--seed", "7"), sample("--seed", "8"))
        # A nucleus of one token is greedy decoding.
        self.assertEqual(sample("--top-p", "1e-9", "--seed", "3"),
                         sample("--temperature", "0"))
        labelled = sample("--modality-of-next", "--temperature", "0")
        for item in labelled.split():
            token, modality = item.split("/")
            self.assertEqual(modality,
                             R.modality_names(cfg)[int(R.modality_of_id(cfg)[int(token)])])

    def test_bad_requests_are_one_line_errors(self):
        artifact, cfg, params, weights = self.prepare("mod_moe_4t4i_aux")
        plain, _ = compile_variant(self.tmp.name, "moe_4t4i")
        plain_weights = os.path.join(plain, "w.safetensors")
        run(MOMARUN, "init", plain, "-o", plain_weights)
        cases = [
            (artifact, weights, "[]", [], "prompt 1 is empty"),
            (artifact, weights, "[1, 9999]", [], "token id 9999 outside [0, 512)"),
            (artifact, weights, "[1, 2, 3]", ["--max-new", "126"],
             "prompt 1 has 3 tokens; with --max-new 126 that is more than the 128"),
            (artifact, weights, "[1]\n[2]\n[3]", [],
             "3 prompts, but this artifact decodes at most 2"),
            (plain, plain_weights, "[1, 2]", [],
             "has no auxiliary routers, and expert choice and MoD choose over a whole batch"),
        ]
        for target, w, prompts, extra, message in cases:
            path = os.path.join(self.tmp.name, "bad.jsonl")
            with open(path, "w") as f:
                f.write(prompts + "\n")
            result = subprocess.run([MOMARUN, "generate", target, "--weights", w,
                                     "--prompt", path, *extra],
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 1, message)
            self.assertIn(message, result.stderr)
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)


class CompiledTrainingMatchesReference(TemporaryDirectoryTestCase):
    """momarun train (compiled @grad and @optimizer_step) against the
    reference's AdamW steps; --resume against an uninterrupted run."""

    # The spec's default lr: AdamW normalizes each step to about lr, so with
    # larger rates fp32 rounding of near-zero gradients (and, in MoE models,
    # top-k boundaries moved by it) grows past the 1e-3 parameter tolerance
    # within ten steps; at 1e-4 the runs agree within 1e-5 (the issue asks for
    # 1e-3).
    # A strong weight decay makes its effect (about 1e-4 over ten steps)
    # visible against the 2e-5 parameter tolerance.
    TRAIN = {"micro_batches": 2, "total_steps": 12, "warmup_steps": 4,
             "lr": 1e-4, "min_lr": 1e-6, "weight_decay": 20.0, "grad_clip": 1.0}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.streams = {}  # artifact directory -> its token stream

    def prepare(self, variant, steps, **overrides):
        artifact, cfg = compile_variant(self.tmp.name, variant,
                                        train=dict(self.TRAIN), **overrides)
        params = R.init_params(cfg, seed=21)
        weights = os.path.join(artifact, "init.safetensors")
        R.write_safetensors(weights, {k: v.float() for k, v in params.items()})
        batch, seq = cfg["train"]["batch_size"], cfg["seq_len"]
        rows = steps * cfg["train"]["micro_batches"] * batch
        stream = np.random.default_rng(9).integers(0, cfg["vocab_size"],
                                                   size=rows * seq + 1)
        prefix = os.path.join(artifact, "data")
        write_indexed_dataset(prefix, [stream])
        return artifact, cfg, params, weights, prefix, stream

    def test_ten_steps_match_reference_adamw(self):
        steps = 10
        artifact, cfg, params, weights, prefix, stream = self.prepare(
            "moe_4t4i", steps)
        run_dir = os.path.join(artifact, "run")
        run(MOMARUN, "train", artifact, "--data", prefix, "--steps", str(steps),
            "--out", run_dir, "--init", weights)

        batch, seq = cfg["train"]["batch_size"], cfg["seq_len"]
        micro = cfg["train"]["micro_batches"]
        reference = {k: v.double().clone() for k, v in params.items()}
        state = R.new_optimizer_state(reference)
        expected_metrics = []
        for t in range(1, steps + 1):
            batches = []
            for m in range(micro):
                first = ((t - 1) * micro + m) * batch
                rows = [stream[(first + r) * seq:(first + r) * seq + seq + 1]
                        for r in range(batch)]
                batches.append(torch.tensor(np.stack(rows), dtype=torch.long))
            expected_metrics.append(R.train_step(cfg, reference, batches, state, t))

        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        self.assertEqual([m["step"] for m in metrics], list(range(1, steps + 1)))
        # Step 1 sees identical weights: the gradient contract's 1e-4. Later
        # steps see fp32 weights against the reference's fp64 ones, and
        # AdamW's normalized updates amplify the difference of tiny gradients,
        # so the losses keep 1e-3 and the gradient norm 1e-2.
        for got, want in zip(metrics, expected_metrics):
            first = want["step"] == 1
            for key, tolerance in [("loss", 1e-4 if first else 1e-3),
                                   ("loss.text", 1e-4 if first else 1e-3),
                                   ("loss.image", 1e-4 if first else 1e-3),
                                   ("lr", 1e-6),
                                   ("grad_norm", 1e-4 if first else 1e-2)]:
                self.assertAlmostEqual(got[key], want[key],
                                       delta=tolerance * abs(want[key]) + 1e-9,
                                       msg=f"step {want['step']} {key}")
            self.assertGreater(got["tokens_per_s"], 0)

        trained = R.read_safetensors(os.path.join(run_dir, "checkpoint.safetensors"),
                                     with_metadata=True)
        tensors, metadata = trained
        self.assertEqual(metadata["step"], str(steps))
        self.assertEqual(metadata["data_position"], str(steps * micro * batch))
        for name, value in reference.items():
            error = float((tensors[name].double() - value).abs().max())
            self.assertLessEqual(error, 2e-5, name)
            if not R.is_aux(name):
                self.assertIn("optim.m." + name, tensors)

    def test_resume_reproduces_an_uninterrupted_run(self):
        self.check_resume("mod_moe_4t4i")

    def test_resume_with_router_noise_reproduces_an_uninterrupted_run(self):
        # moe.gumbel: the checkpoint carries the noise stream's state.
        artifact, cfg, params, whole = self.check_resume(
            "mod_moe_4t4i", moe={"gumbel": True})
        _, metadata = R.read_safetensors(
            os.path.join(whole, "checkpoint.safetensors"), with_metadata=True)
        self.assertNotEqual(metadata["rng"], "none")
        # Training draws noise: step 1 differs from noise-free routing.
        with open(os.path.join(whole, "metrics.jsonl")) as f:
            first = json.loads(f.readline())
        batch, seq = cfg["train"]["batch_size"], cfg["seq_len"]
        stream = self.streams[artifact]
        clean = []
        for m in range(cfg["train"]["micro_batches"]):
            rows = [stream[(m * batch + r) * seq:(m * batch + r) * seq + seq + 1]
                    for r in range(batch)]
            loss, _ = R.forward(cfg, params, torch.tensor(np.stack(rows), dtype=torch.long))
            clean.append(float(loss))
        self.assertGreater(abs(first["loss"] - np.mean(clean)), 1e-4)

    def check_resume(self, variant, **overrides):
        """Six steps in one run and in two runs of three (--resume) agree
        exactly; returns (artifact, config, initial params, whole run dir)."""
        steps = 6
        artifact, cfg, params, weights, prefix, stream = self.prepare(
            variant, steps, **overrides)
        self.streams[artifact] = stream
        whole = os.path.join(artifact, "whole")
        run(MOMARUN, "train", artifact, "--data", prefix, "--steps", str(steps),
            "--out", whole, "--init", weights)
        parts = os.path.join(artifact, "parts")
        run(MOMARUN, "train", artifact, "--data", prefix, "--steps", "3",
            "--out", parts, "--init", weights)
        run(MOMARUN, "train", artifact, "--data", prefix, "--steps", "3",
            "--out", parts, "--resume")

        def losses(run_dir):
            with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                return [(m["step"], m["loss"], m["loss.text"], m["loss.image"],
                         m["grad_norm"]) for m in map(json.loads, f)]
        self.assertEqual(losses(parts), losses(whole))
        a = R.read_safetensors(os.path.join(whole, "checkpoint.safetensors"))
        b = R.read_safetensors(os.path.join(parts, "checkpoint.safetensors"))
        for name in a:
            self.assertTrue(torch.equal(a[name], b[name]), name)
        return artifact, cfg, params, whole


class TrainingStateStaysOnTheDevice(TemporaryDirectoryTestCase):
    """Issue 9: a CUDA artifact's parameters, gradients and AdamW moments
    live in device memory. Run on a cuda-emulated artifact (the CUDA
    runtime's interface over separate host allocations; on a GPU machine,
    MOMAC_E2E_TARGET=cuda runs it on the GPU): the state goes up once and
    comes down only for the checkpoint, however many steps run, and the
    run equals the CPU artifact's."""

    TRAIN = {"micro_batches": 2, "total_steps": 12, "warmup_steps": 2}

    def train(self, artifact, data, steps):
        out = os.path.join(self.tmp.name, f"{os.path.basename(artifact)}-{steps}")
        result = subprocess.run(
            [MOMARUN, "train", artifact, "--data", data, "--steps", str(steps),
             "--out", out], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            losses = [(m["loss"], m["grad_norm"]) for m in map(json.loads, f)]
        return result.stderr, losses, out

    def test_the_state_is_copied_up_once_and_down_for_checkpoints(self):
        target = os.environ.get("MOMAC_E2E_TARGET") or "cuda-emulated"
        device, _ = compile_variant(self.tmp.name, "moe_4t4i",
                                    target_args=["--target=" + target],
                                    train=dict(self.TRAIN))
        cpu, _ = compile_variant(self.tmp.name, "moe_4t4i", target_args=[],
                                 train=dict(self.TRAIN))
        data = os.path.join(self.tmp.name, "data")
        run(MOMARUN, "corpus", cpu, "--out", data, "--synthetic", "40")
        copies = {}
        for steps in (2, 5):
            stderr, losses, out = self.train(device, data, steps)
            match = re.search(r"\(([0-9.]+) MB\) stayed in device memory: "
                              r"(\d+) uploads \(([0-9.]+) MB\), (\d+) downloads "
                              r"\(([0-9.]+) MB\)", stderr)
            self.assertIsNotNone(match, stderr)
            copies[steps] = match.groups()
            _, cpu_losses, cpu_out = self.train(cpu, data, steps)
            for (loss, norm), (want_loss, want_norm) in zip(losses, cpu_losses):
                self.assertAlmostEqual(loss, want_loss, delta=1e-5 * want_loss)
                self.assertAlmostEqual(norm, want_norm, delta=1e-4 * want_norm)
            a = R.read_safetensors(os.path.join(out, "checkpoint.safetensors"))
            b = R.read_safetensors(os.path.join(cpu_out, "checkpoint.safetensors"))
            for name in b:
                self.assertLessEqual(float((a[name] - b[name]).abs().max()),
                                     1e-5, name)
        # Weights and both moments of each trained parameter: uploaded once,
        # downloaded once (the final checkpoint), for 2 steps as for 5.
        self.assertEqual(copies[2], copies[5])
        state_mb, uploads, up_mb, downloads, down_mb = copies[5]
        self.assertEqual(uploads, downloads)
        self.assertEqual(up_mb, down_mb)
        checkpoint = R.read_safetensors(os.path.join(out, "checkpoint.safetensors"))
        self.assertEqual(int(uploads), len(checkpoint))
        checkpoint_mb = sum(t.numel() * 4 for t in checkpoint.values()) / 1e6
        self.assertAlmostEqual(float(up_mb), checkpoint_mb, delta=0.1)
        # The state also holds the gradients and their micro-batch mean,
        # which never leave the device.
        self.assertGreater(float(state_mb), float(up_mb))


class DeviceMemoryIsCheckedAtStartUp(TemporaryDirectoryTestCase):
    """momarun refuses, before anything is allocated there, a run whose
    state does not fit the GPU's free memory, saying both numbers (momac's
    --gpu-memory assumes a GPU it cannot see). The emulation pretends a small
    GPU with MOMA_EMULATED_GPU_MEMORY (bytes)."""

    def test_train_grad_and_eval_refuse_a_state_beyond_free_memory(self):
        artifact, cfg = compile_variant(self.tmp.name, "moe_4t4i",
                                        target_args=["--target=cuda-emulated"])
        data = os.path.join(self.tmp.name, "data")
        run(MOMARUN, "corpus", artifact, "--out", data, "--synthetic", "20")
        weights = os.path.join(self.tmp.name, "w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        tokens = os.path.join(self.tmp.name, "tokens.bin")
        R.write_tokens(tokens, R.random_tokens(cfg, 1, seed=1))
        small = dict(os.environ, MOMA_EMULATED_GPU_MEMORY=str(10**6))
        for command, what in (
                (["train", artifact, "--data", data, "--steps", "1", "--out",
                  os.path.join(self.tmp.name, "run")], "training moe_4t4i_tiny"),
                (["grad", artifact, "--weights", weights, "--tokens", tokens, "--out",
                  os.path.join(self.tmp.name, "g.safetensors")], "the gradient of"),
                (["eval", artifact, "--weights", weights, "--data", data],
                 "evaluating moe_4t4i_tiny")):
            result = subprocess.run([MOMARUN, *command], capture_output=True,
                                    text=True, env=small)
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertRegex(result.stderr, what + r".* needs at least [0-9.]+ GB of GPU "
                             r"memory, but this CPU \(momac --target=cuda-emulated\) "
                             r"has 0\.00 GB free \(of 0\.00 GB\)")
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        # Enough memory: the same training runs.
        result = subprocess.run(
            [MOMARUN, "train", artifact, "--data", data, "--steps", "1", "--out",
             os.path.join(self.tmp.name, "run")], capture_output=True, text=True,
            env=dict(os.environ, MOMA_EMULATED_GPU_MEMORY=str(10**10)))
        self.assertEqual(result.returncode, 0, result.stderr)


class DivergingTraining(TemporaryDirectoryTestCase):
    """Issue 8: a run whose loss blows up (lr 50, one warm-up step) stops on
    the first non-finite loss or gradient, with an error naming the step,
    a finite last checkpoint and a metrics.jsonl that is valid JSON."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.artifact, cls.cfg = compile_variant(
            cls.tmp.name, "moe_4t4i",
            train={"lr": 50, "min_lr": 1, "warmup_steps": 1})
        cls.data = os.path.join(cls.tmp.name, "data")
        run(MOMARUN, "corpus", cls.artifact, "--out", cls.data,
            "--synthetic", "100")

    def train(self, name, *extra):
        out = os.path.join(self.tmp.name, name)
        result = subprocess.run(
            [MOMARUN, "train", self.artifact, "--data", self.data, "--steps", "30",
             "--checkpoint-every", "2", "--out", out, *extra],
            capture_output=True, text=True)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = [json.loads(line) for line in f]  # each line is JSON
        return result, out, lines

    def test_stops_on_the_first_non_finite_step(self):
        result, out, lines = self.train("stop")
        self.assertEqual(result.returncode, 1, result.stderr)
        bad = lines[-1]
        self.assertIsNone(bad["grad_norm"])
        self.assertFalse(bad["skipped"])
        self.assertRegex(result.stderr, rf"error: step {bad['step']}: the "
                         r"(loss is|gradient norm is not finite)")
        self.assertIn("the last good state", result.stderr)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            self.assertNotIn("nan", f.read())
        # The checkpoint holds the weights before the bad step: all finite.
        checkpoint = R.read_safetensors(os.path.join(out, "checkpoint.safetensors"))
        for name, value in checkpoint.items():
            self.assertTrue(bool(torch.isfinite(value).all()), name)
        # Every step before the bad one trained normally.
        self.assertEqual([line["step"] for line in lines],
                         list(range(1, bad["step"] + 1)))

    def test_skips_up_to_n_non_finite_steps(self):
        result, _, lines = self.train("skip", "--skip-nonfinite", "2")
        self.assertEqual(result.returncode, 1, result.stderr)
        skipped = [line["step"] for line in lines if line.get("skipped")]
        self.assertEqual(len(skipped), 2)
        self.assertEqual(result.stderr.count("update skipped"), 2)
        self.assertIn(f"error: step {skipped[-1] + 1}:", result.stderr)


class NonFiniteWeights(TemporaryDirectoryTestCase):
    """Issue 8: NaN or Inf in any kind of parameter gives a result or a clean
    error from grad, eval and train, never a crash."""

    KINDS = ["tok_embeddings.weight", "attention.wq.weight", "q_norm.weight",
             "k_norm.bias", "attention_norm.weight", "moe.text.router.weight",
             "moe.image.w1", "mod.router.weight", "mod.aux_router.w1.weight",
             "norm.weight", "output.weight"]

    def test_nan_and_inf_in_each_parameter_kind(self):
        tmp = self.tmp.name
        artifact, cfg = compile_variant(tmp, "mod_moe_4t4i_aux")
        params = R.init_params(cfg, seed=3)
        data = os.path.join(tmp, "data")
        run(MOMARUN, "corpus", artifact, "--out", data, "--synthetic", "20")
        tokens = os.path.join(tmp, "tokens.bin")
        R.write_tokens(tokens, torch.randint(0, cfg["vocab_size"],
                                             (2, cfg["seq_len"] + 1), dtype=torch.int32))
        for kind in self.KINDS:
            name = next(n for n in params if n.endswith(kind))
            for value in (float("nan"), float("inf"), float("-inf")):
                case = f"{name} = {value}"
                edited = {k: v.clone().float() for k, v in params.items()}
                edited[name].view(-1)[0] = value
                weights = os.path.join(tmp, "w.safetensors")
                R.write_safetensors(weights, edited)
                commands = {
                    "grad": [MOMARUN, "grad", artifact, "--weights", weights,
                             "--tokens", tokens, "--out", os.path.join(tmp, "g.safetensors")],
                    "eval": [MOMARUN, "eval", artifact, "--weights", weights,
                             "--data", data, "--batches", "1", "--json"],
                    "train": [MOMARUN, "train", artifact, "--data", data, "--steps", "2",
                              "--init", weights, "--out", os.path.join(tmp, "run-" + name)],
                }
                for command, args in commands.items():
                    result = subprocess.run(args, capture_output=True, text=True)
                    self.assertIn(result.returncode, (0, 1),
                                  f"{command}, {case}: {result.stderr[-500:]}")
                    if command == "eval":
                        json.loads(result.stdout)  # null, never a bare nan
                    if result.returncode == 1:
                        self.assertRegex(result.stderr, r"^momarun: error: ",
                                         f"{command}, {case}")


class MomarunErrors(unittest.TestCase):
    def assert_grad_fails(self, artifact, weights, tokens, message, *extra, case=None):
        """momarun grad exits with 1 and a stderr containing `message`."""
        out = os.path.join(os.path.dirname(tokens), "o.safetensors")
        result = subprocess.run(
            [MOMARUN, "grad", artifact, "--weights", weights, "--tokens", tokens,
             "--out", out, *extra], capture_output=True, text=True)
        self.assertEqual(result.returncode, 1, case)
        self.assertIn(message, result.stderr, case)

    def test_contradictory_or_out_of_range_flags_are_clear_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            artifact, _ = compile_variant(tmp, "dense")
            weights = os.path.join(tmp, "w.safetensors")
            run(MOMARUN, "init", artifact, "-o", weights)
            data = os.path.join(tmp, "data")
            run(MOMARUN, "corpus", artifact, "--out", data, "--synthetic", "20")
            cases = {
                "synthetic": (["corpus", artifact, "--out", data, "--synthetic", "-3"],
                              "--synthetic -3: the number of documents must be at least 1"),
                "image-tokens": (["corpus", artifact, "--out", data, "--synthetic", "2",
                                  "--image-tokens", "1099511627776"],
                                 "--image-tokens 1099511627776: expected 1 to 1048576"),
                "batches": (["eval", artifact, "--weights", weights, "--data", data,
                             "--batches", "0"], "--batches 0: evaluate at least 1 batch"),
                "batch-size": (["eval", artifact, "--weights", weights, "--data", data,
                                "--batch-size", "0"], "--batch-size 0: this artifact takes 1 to 2"),
                "memory": (["train", artifact, "--data", data, "--steps", "1",
                            "--out", os.path.join(tmp, "run"), "--memory-limit", "0.001"],
                           "training dense_tiny (weights, gradients and AdamW moments) "
                           "needs at least 0.01 GB, more than --memory-limit (0.00 GB)"),
                "init-resume": (["train", artifact, "--data", data, "--steps", "1",
                                 "--out", os.path.join(tmp, "run"), "--init", weights,
                                 "--resume"], "give --init or --resume, not both"),
            }
            for name, (args, message) in cases.items():
                result = subprocess.run([MOMARUN, *args], capture_output=True, text=True)
                self.assertEqual(result.returncode, 1, name)
                self.assertIn(message, result.stderr, name)

    def test_outputs_are_only_regular_files_and_leave_no_temporaries(self):
        import glob
        import signal
        import time
        with tempfile.TemporaryDirectory() as tmp:
            artifact, _ = compile_variant(tmp, "dense")
            # A FIFO (a device takes the same path) is refused and left.
            fifo = os.path.join(tmp, "pipe")
            os.mkfifo(fifo)
            result = subprocess.run([MOMARUN, "init", artifact, "-o", fifo],
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 1)
            self.assertIn(f"{fifo}: exists and is a FIFO; only regular files "
                          "are written", result.stderr)
            self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))
            # SIGTERM in the middle of a long write removes its temporary.
            prefix = os.path.join(tmp, "big")
            process = subprocess.Popen(
                [MOMARUN, "corpus", artifact, "--out", prefix,
                 "--synthetic", "5000000"],  # 6.6 GB: seconds to write
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 20
            while not glob.glob(prefix + ".bin.tmp-*") and time.time() < deadline:
                time.sleep(0.05)
            self.assertTrue(glob.glob(prefix + ".bin.tmp-*"))
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
            self.assertEqual(glob.glob(prefix + "*"), [])
            # What a kill -9 left is removed when a run starts there.
            data = os.path.join(tmp, "data")
            run(MOMARUN, "corpus", artifact, "--out", data, "--synthetic", "20")
            run_dir = os.path.join(tmp, "run")
            os.makedirs(run_dir)
            stale = os.path.join(run_dir, "checkpoint.safetensors.tmp-dead")
            open(stale, "w").close()
            result = subprocess.run(
                [MOMARUN, "train", artifact, "--data", data, "--steps", "1",
                 "--out", run_dir], capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("removed 1 temporary file(s) of an interrupted "
                          "checkpoint write", result.stderr)
            self.assertFalse(os.path.exists(stale))

    def test_inconsistent_artifacts_are_one_line_errors(self):
        import shutil
        with tempfile.TemporaryDirectory() as tmp:
            artifact, _ = compile_variant(tmp, "dense")
            weights = os.path.join(tmp, "w.safetensors")

            def init_fails(directory, message, case):
                result = subprocess.run([MOMARUN, "init", directory, "-o", weights],
                                        capture_output=True, text=True)
                self.assertEqual(result.returncode, 1, case)
                self.assertIn(message, result.stderr, case)
                self.assertEqual(result.stderr.count("\n"), 1, result.stderr)

            with open(os.path.join(artifact, "manifest.json")) as f:
                manifest = json.load(f)
            for field, value, message in [
                    ("vocab_size", 1024, "vocab_size is 1024, but its model "
                                         "description (model.json) says 512"),
                    ("seq_len", 64, "seq_len is 64"),
                    ("model", "other", "model is 'other'")]:
                lying = os.path.join(tmp, "lying-" + field)
                shutil.copytree(artifact, lying)
                with open(os.path.join(lying, "manifest.json"), "w") as f:
                    json.dump({**manifest, field: value}, f)
                init_fails(lying, message, field)

            truncated = os.path.join(tmp, "truncated")
            shutil.copytree(artifact, truncated)
            library = os.path.join(truncated, "model.so")
            size = os.path.getsize(library)
            with open(library, "r+b") as f:
                f.truncate(size // 2)
            init_fails(truncated, f"{size // 2} bytes, but the manifest "
                                  f"records {size}: truncated or replaced", "truncated")

            modified = os.path.join(tmp, "modified")
            shutil.copytree(artifact, modified)
            library = os.path.join(modified, "model.so")
            with open(library, "r+b") as f:
                f.seek(size // 2)
                byte = f.read(1)
                f.seek(size // 2)
                f.write(bytes([byte[0] ^ 0xFF]))
            init_fails(modified, "is not the manifest's", "modified")

    def test_missing_artifact_is_a_clear_error(self):
        result = subprocess.run([MOMARUN, "init", "/nonexistent", "-o", "/tmp/x"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertIn("not an artifact directory", result.stderr)

    def test_bad_token_files_are_clear_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            artifact, cfg = compile_variant(tmp, "dense")
            weights = os.path.join(tmp, "w.safetensors")
            run(MOMARUN, "init", artifact, "-o", weights)
            seq = cfg["seq_len"]
            cases = {
                "ragged": (np.zeros(2 * (seq + 1) - 1, "<i4"),
                           "is not a whole number of sequences"),
                "batch": (np.zeros(3 * (seq + 1), "<i4"),
                          "holds 3 sequences, but the artifact takes at most 2"),
                "range": (np.full(2 * (seq + 1), 512, "<i4"),
                          "outside [0, 512)"),
            }
            for name, (tokens, message) in cases.items():
                path = os.path.join(tmp, name + ".bin")
                tokens.tofile(path)
                self.assert_grad_fails(artifact, weights, path, message, case=name)

            # A dense model has no router noise to give.
            tokens = os.path.join(tmp, "tokens.bin")
            np.zeros(2 * (seq + 1), "<i4").tofile(tokens)
            noise = os.path.join(tmp, "noise.bin")
            np.zeros(8, "<f4").tofile(noise)
            self.assert_grad_fails(artifact, weights, tokens,
                                   "--noise: the model has no router noise",
                                   "--noise", noise)

    def test_bad_noise_files_are_clear_errors(self):
        with tempfile.TemporaryDirectory() as tmp:
            artifact, cfg = compile_variant(tmp, "mod_moe_4t4i_aux")
            weights = os.path.join(tmp, "w.safetensors")
            run(MOMARUN, "init", artifact, "-o", weights)
            tokens = os.path.join(tmp, "tokens.bin")
            np.zeros(2 * (cfg["seq_len"] + 1), "<i4").tofile(tokens)
            # [n_layers, B*S, max experts] = [4, 256, 4] floats.
            cases = {"size": (np.zeros(7, "<f4"), "the router noise has 7 values, "
                              "but the 'grad' entry point takes 4096"),
                     "ragged": (np.zeros(5, "<u1"), "is not a whole, nonzero number")}
            for name, (values, message) in cases.items():
                path = os.path.join(tmp, name + ".bin")
                values.tofile(path)
                self.assert_grad_fails(artifact, weights, tokens, message,
                                       "--noise", path, case=name)


if __name__ == "__main__":
    unittest.main()
