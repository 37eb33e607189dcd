"""End-to-end reliability (issue 24): momarun as a hostile user, or a crash,
would try it.

- crashing checkpointing at every named failpoint on every rank, then
  resuming, continues the uninterrupted run's curve bit for bit;
- swapped, copied, corrupted and truncated shards, and shard sets whose
  metadata was edited (with the set's checksums forged to match), are each
  refused in one line naming the file and the field;
- deeply nested JSON is refused everywhere momarun reads JSON;
- a run directory has one writer; no command writes over one of its inputs;
- sizes are bounded before anything is allocated;
- wrong numbers become errors: plot over modality-free steps and infinite
  values, non-finite weights for generate and upcycle, a resume that changes
  the batch; control characters of input are escaped in messages.

Needs the build and OpenMPI's mpirun (MOMAC_BUILD_DIR, default ./build).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import moma_reference as R  # noqa: E402
from test_fsdp import ENV, MOMAC, MOMARUN, MPIRUN, TINY, metrics  # noqa: E402
from test_momarun import compile_cached  # noqa: E402

POINTS = ["checkpoint-mid-data-write", "checkpoint-before-rename",
          "checkpoint-between-renames", "checkpoint-before-set-manifest",
          "checkpoint-after-set-manifest"]
TIMING = {"tokens_per_s", "slowest_rank_s", "comm_wait_s"}


def run(*args, env=ENV, ok=True):
    result = subprocess.run([str(a) for a in args], capture_output=True,
                            text=True, env=env, timeout=600)
    if ok and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def curve(run_dir):
    """The metrics of a run without its timings: bit-for-bit comparable."""
    return [{k: v for k, v in line.items() if k not in TIMING}
            for line in metrics(run_dir)]


def rewrite_header(path, edit):
    """Rewrites a safetensors file's header with `edit(header)` (the data
    unchanged, so its tensors' checksums still hold)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def forge_set(run_dir):
    """Makes checkpoint.shards.json agree with its files again (as a forger
    would), so that only the files' own fields can catch an edit."""
    path = os.path.join(run_dir, "checkpoint.shards.json")
    shard_set = json.load(open(path))
    for shard in shard_set["shards"]:
        data = open(os.path.join(run_dir, shard["file"]), "rb").read()
        shard["bytes"] = len(data)
        shard["xxh3"] = xxhash.xxh3_64_hexdigest(data)
    json.dump(shard_set, open(path, "w"))


class ReliabilityTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, *names):
        return os.path.join(self.tmp.name, *names)

    def compile(self, variant, fsdp=False, **train):
        with open(os.path.join(TINY, variant + ".json")) as f:
            desc = json.load(f)
        desc["train"].update(batch_size=2, **train)
        tag = variant + ("-fsdp" if fsdp else "") + "".join(
            f"-{k}{v}" for k, v in sorted(train.items()))
        description = self.path(tag + ".json")
        with open(description, "w") as f:
            json.dump(desc, f)
        artifact = self.path(tag)
        if not os.path.exists(artifact):
            compile_cached(description, artifact, ["--fsdp"] if fsdp else [])
        return artifact, description

    def corpus(self, description):
        prefix = self.path("data")
        if not os.path.exists(prefix + ".bin"):
            run(MOMARUN, "corpus", description, "--out", prefix, "--synthetic", "80")
        return prefix

    def assertOneLineError(self, result, *fragments):
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertNotIn("Stack dump", result.stderr)
        self.assertNotIn("LLVM ERROR", result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class CrashWhileCheckpointing(ReliabilityTestCase):
    """Both ranks of a 2-rank run, killed (SIGKILL) at each step of writing
    its second checkpoint, resume from the last committed shard set and end
    with the uninterrupted run's metrics, bit for bit."""

    def test_every_failpoint_on_every_rank(self):
        sharded, description = self.compile("moe_4t4i", fsdp=True)
        data = self.corpus(description)
        mpi = [MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train", sharded,
               "--data", data, "--checkpoint-every", "2"]
        straight = self.path("straight")
        run(*mpi, "--steps", "6", "--out", straight)
        want = curve(straight)
        for point in POINTS:
            for rank in (0, 1):
                with self.subTest(point=point, rank=rank):
                    out = self.path(f"crash-{point}-{rank}")
                    crashed = run(*mpi, "--steps", "6", "--out", out,
                                  env=dict(ENV, MOMA_FAILPOINT=f"{point}@{rank}#2"),
                                  ok=False)
                    # Points only rank 0 reaches (the commit) never fire on
                    # rank 1: that run simply finishes.
                    fired = f"failpoint {point} on rank {rank}" in crashed.stderr
                    self.assertEqual(crashed.returncode != 0, fired, crashed.stderr)
                    committed = json.load(open(os.path.join(
                        out, "checkpoint.shards.json")))["step"]
                    self.assertIn(committed, (2, 4, 6))
                    if committed < 6:
                        run(*mpi, "--steps", str(6 - committed), "--out", out,
                            "--resume")
                    self.assertEqual(curve(out), want)
                    # Nothing of the interrupted write is left behind.
                    self.assertEqual(
                        sorted(f for f in os.listdir(out) if f.startswith("checkpoint")),
                        ["checkpoint.shards.json",
                         "checkpoint.step-6.shard-0-of-2.safetensors",
                         "checkpoint.step-6.shard-1-of-2.safetensors"])


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class UntrustedShardSets(ReliabilityTestCase):
    """A shard set is checked before anything is used: each tampering is one
    line naming the file and what is wrong, for resume and consolidate."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sharded, cls.description = None, None

    def fresh_set(self, name):
        if not getattr(self, "_base", None):
            sharded, description = self.compile("moe_4t4i", fsdp=True)
            data = self.corpus(description)
            base = self.path("base")
            run(MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train", sharded,
                "--data", data, "--steps", "2", "--out", base)
            type(self)._base = (base, sharded, data)
        base, sharded, data = self._base
        copy = self.path(name)
        shutil.copytree(base, copy)
        return copy, sharded, data

    def refused(self, run_dir, sharded, data, *fragments):
        resumed = run(MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train",
                      sharded, "--data", data, "--steps", "1", "--out", run_dir,
                      "--resume", ok=False)
        self.assertOneLineError(resumed, *fragments)
        consolidated = run(MOMARUN, "ckpt", "consolidate", run_dir, "-o",
                           os.path.join(run_dir, "w.safetensors"), ok=False)
        self.assertOneLineError(consolidated, *fragments)

    def shard(self, run_dir, rank):
        return os.path.join(run_dir, f"checkpoint.step-2.shard-{rank}-of-2.safetensors")

    def test_swapped_copied_corrupted_and_truncated_shards(self):
        swapped, sharded, data = self.fresh_set("swapped")
        a, b = self.shard(swapped, 0), self.shard(swapped, 1)
        os.rename(a, a + ".x"), os.rename(b, a), os.rename(a + ".x", b)
        self.refused(swapped, sharded, data, "shard-0-of-2.safetensors",
                     "the shard set")
        copied, _, _ = self.fresh_set("copied")
        shutil.copy(self.shard(copied, 0), self.shard(copied, 1))
        self.refused(copied, sharded, data, "shard-1-of-2.safetensors",
                     "the shard set")
        flipped, _, _ = self.fresh_set("flipped")
        path = self.shard(flipped, 1)
        raw = bytearray(open(path, "rb").read())
        for i in range(64):
            raw[len(raw) - 100 - i] ^= 0x55
        open(path, "wb").write(raw)
        self.refused(flipped, sharded, data, "shard-1-of-2.safetensors",
                     "is not the shard set's")
        truncated, _, _ = self.fresh_set("truncated")
        path = self.shard(truncated, 0)
        os.truncate(path, os.path.getsize(path) - 1000)
        self.refused(truncated, sharded, data, "shard-0-of-2.safetensors",
                     "but the shard set records")

    def test_swaps_and_edits_behind_forged_checksums(self):
        # Swapped, and the set's checksums forged: the files' own ranks say.
        swapped, sharded, data = self.fresh_set("forged-swap")
        a, b = self.shard(swapped, 0), self.shard(swapped, 1)
        os.rename(a, a + ".x"), os.rename(b, a), os.rename(a + ".x", b)
        forge_set(swapped)
        self.refused(swapped, sharded, data, "shard-0-of-2.safetensors: fsdp_layout: "
                     "rank 1 of 2, but the set has it as rank 0 of 2")

        def layout_edit(name, change, *fragments):
            edited, _, _ = self.fresh_set(name)

            def edit(header):
                layout = json.loads(header["__metadata__"]["fsdp_layout"])
                change(layout)
                header["__metadata__"]["fsdp_layout"] = json.dumps(layout)
            rewrite_header(self.shard(edited, 1), edit)
            forge_set(edited)
            self.refused(edited, sharded, data, "shard-1-of-2.safetensors", *fragments)

        def offset(value):
            return lambda layout: layout["units"][1]["parameters"][0].__setitem__(
                "offset", value)
        layout_edit("offset-huge", offset(2 ** 40), "does not fit in unit")
        layout_edit("offset-negative", offset(-100000), "does not fit in unit")
        layout_edit("elements-huge",
                    lambda layout: layout["units"][1].__setitem__("elements", 2 ** 62),
                    "not a shard of unit")

        negative, _, _ = self.fresh_set("step-negative")
        for rank in (0, 1):
            rewrite_header(self.shard(negative, rank), lambda h: h["__metadata__"].__setitem__("step", "-5"))
        forge_set(negative)
        self.refused(negative, sharded, data, "metadata step is '-5', expected a number "
                     "of steps >= 0")

    def test_one_rank_checkpoint_fields_and_checksums(self):
        one, description = self.compile("moe_4t4i")
        data = self.corpus(description)
        out = self.path("one-rank")
        run(MOMARUN, "train", one, "--data", data, "--steps", "1", "--out", out)
        path = os.path.join(out, "checkpoint.safetensors")
        rewrite_header(path, lambda h: h["__metadata__"].__setitem__("step", "-5"))
        resumed = run(MOMARUN, "train", one, "--data", data, "--steps", "1",
                      "--out", out, "--resume", ok=False)
        self.assertOneLineError(resumed, "checkpoint.safetensors: metadata step is '-5'")
        rewrite_header(path, lambda h: h["__metadata__"].__setitem__("step", "1"))
        raw = bytearray(open(path, "rb").read())
        raw[-8] ^= 0x01
        open(path, "wb").write(raw)
        resumed = run(MOMARUN, "train", one, "--data", data, "--steps", "1",
                      "--out", out, "--resume", ok=False)
        self.assertOneLineError(resumed, "its data does not match its checksum")


class DeepJson(ReliabilityTestCase):
    """100,000 levels of nesting: refused in one line, never a stack
    overflow, wherever momarun reads JSON."""

    DEEP = "[" * 100000 + "]" * 100000

    def test_prompt_corpus_run_record_metrics_and_manifest(self):
        artifact, description = self.compile("mod_moe_4t4i_aux")
        weights = self.path("deep-w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        prompt = self.path("deep.jsonl")
        open(prompt, "w").write(self.DEEP + "\n")
        result = run(MOMARUN, "generate", artifact, "--weights", weights,
                     "--prompt", prompt, ok=False)
        self.assertOneLineError(result, "nested deeper than 64 levels")
        result = run(MOMARUN, "corpus", description, "--out", self.path("deep-corpus"),
                     "--input", prompt, ok=False)
        self.assertOneLineError(result, "nested deeper than 64 levels")
        data = self.corpus(description)
        out = self.path("deep-run")
        run(MOMARUN, "train", artifact, "--data", data, "--steps", "2", "--out", out)
        with open(os.path.join(out, "metrics.jsonl"), "a") as f:
            f.write('{"step": 3, "x": ' + self.DEEP + "}\n")
        result = run(MOMARUN, "plot", out, "-o", self.path("deep.svg"), ok=False)
        self.assertOneLineError(result, "metrics.jsonl:3:", "nested deeper than 64 levels")
        record = json.load(open(os.path.join(out, "run.json")))
        open(os.path.join(out, "run.json"), "w").write(
            json.dumps(record)[:-1] + ', "x": ' + self.DEEP + "}")
        result = run(MOMARUN, "plot", out, "-o", self.path("deep.svg"), ok=False)
        self.assertOneLineError(result, "run.json", "nested deeper than 64 levels")
        copy = self.path("deep-artifact")
        shutil.copytree(artifact, copy)
        manifest = open(os.path.join(copy, "manifest.json")).read()
        open(os.path.join(copy, "manifest.json"), "w").write(
            manifest.rstrip()[:-1] + ', "x": ' + self.DEEP + "}")
        result = run(MOMARUN, "init", copy, "-o", self.path("w2.safetensors"), ok=False)
        self.assertOneLineError(result, "manifest.json", "nested deeper than 64 levels")


class OneWriterAndNoInputAsOutput(ReliabilityTestCase):
    def test_a_second_writer_is_refused(self):
        artifact, description = self.compile("moe_4t4i")
        data = self.corpus(description)
        out = self.path("busy")
        first = subprocess.Popen([MOMARUN, "train", artifact, "--data", data,
                                  "--steps", "100000", "--out", out],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=ENV)
        try:
            for _ in range(600):  # until it holds the lock and has a checkpoint
                if os.path.exists(os.path.join(out, "metrics.jsonl")):
                    break
                time.sleep(0.1)
            for extra in ([], ["--resume"]):
                second = run(MOMARUN, "train", artifact, "--data", data, "--steps",
                             "1", "--out", out, *extra, ok=False)
                self.assertOneLineError(second, "is in use by another momarun",
                                        f"train pid {first.pid}")
        finally:
            first.kill()
            first.wait()
        aux, _ = self.compile("mod_moe_4t4i_aux")
        aux_weights = self.path("aux-w.safetensors")
        run(MOMARUN, "init", aux, "-o", aux_weights)
        # The training run is over, but its directory is a training run's.
        result = run(MOMARUN, "train-aux", aux, "--weights", aux_weights, "--data",
                     data, "--steps", "1", "--out", out, ok=False)
        self.assertOneLineError(result, "holds a run of momarun train")

    def test_no_output_is_an_input(self):
        artifact, description = self.compile("mod_moe_4t4i_aux")
        data = self.corpus(description)
        weights = self.path("in-w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        out = self.path("io-run")
        run(MOMARUN, "train", artifact, "--data", data, "--steps", "1", "--out", out)
        checkpoint = os.path.join(out, "checkpoint.safetensors")
        tokens = self.path("io-tokens.bin")
        R.write_tokens(tokens, R.random_tokens(R.load_config(description), 1, seed=1))
        prompt = self.path("io-prompt.txt")
        open(prompt, "w").write("1 2 3\n")
        link = self.path("io-link.safetensors")
        os.symlink(weights, link)
        aux_out = self.path("io-aux")
        os.makedirs(aux_out)
        aux_weights = os.path.join(aux_out, "weights.safetensors")
        shutil.copy(weights, aux_weights)
        cases = [
            ("upcycle", "--from", weights, "--to", artifact, "-o", link),
            ("ckpt", "consolidate", out, "-o", checkpoint),
            ("generate", artifact, "--weights", weights, "--prompt", prompt,
             "--out", weights),
            ("grad", artifact, "--weights", weights, "--tokens", tokens, "--out",
             tokens),
            ("init", artifact, "-o", os.path.join(artifact, "manifest.json")),
            ("plot", out, "-o", os.path.join(out, "metrics.jsonl")),
            ("corpus", description, "--out", data, "--input", data + ".bin"),
            ("train", artifact, "--data", data, "--steps", "1", "--out", out,
             "--init", checkpoint),
            ("train-aux", artifact, "--weights", aux_weights, "--data", data,
             "--steps", "1", "--out", aux_out),
        ]
        for case in cases:
            with self.subTest(command=case[0]):
                before = {p: open(p, "rb").read() for p in (weights, checkpoint)}
                result = run(MOMARUN, *case, ok=False)
                self.assertOneLineError(result, "is also an input of this command")
                for p, content in before.items():
                    self.assertEqual(open(p, "rb").read(), content, p)


class BoundsAndRightNumbers(ReliabilityTestCase):
    def test_sparse_index_and_huge_models_are_refused_before_allocating(self):
        # An index whose counts the (sparse) file really holds, but no
        # machine's memory: refused before the arrays are allocated.
        prefix = self.path("sparse")
        open(prefix + ".bin", "wb").close()
        count = 2 ** 38
        with open(prefix + ".idx", "wb") as f:
            f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8)
                    + struct.pack("<Q", count) + struct.pack("<Q", count))
            f.truncate(34 + 20 * count)
        artifact, description = self.compile("moe_4t4i")
        result = run(MOMARUN, "train", artifact, "--data", prefix, "--steps", "1",
                     "--out", self.path("sparse-run"), ok=False)
        self.assertOneLineError(result, "GB of memory for the index")
        # A model far beyond memory: init refuses with train's estimate.
        huge = json.load(open(description))
        # Two layers already hold 215 GB of weights; more layers would only
        # lengthen the compile.
        huge.update(d_model=16384, ffn_hidden=65536, n_heads=128, n_layers=2,
                    name="huge")
        path = self.path("huge.json")
        json.dump(huge, open(path, "w"))
        run(MOMAC, path, "-o", self.path("huge"))
        result = run(MOMARUN, "init", self.path("huge"), "-o",
                     self.path("huge.safetensors"), ok=False)
        self.assertOneLineError(result, "initializing huge (its weights) needs at "
                                "least", "more than this machine's memory")
        self.assertFalse(os.path.exists(self.path("huge.safetensors")))

    def test_corpus_and_eval_bounds(self):
        artifact, description = self.compile("moe_4t4i")
        result = run(MOMARUN, "corpus", description, "--out", self.path("big"),
                     "--synthetic", "1000000000000", ok=False)
        self.assertOneLineError(result, "--synthetic 1000000000000: at most")
        data = self.corpus(description)
        weights = self.path("eval-w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        result = run(MOMARUN, "eval", artifact, "--weights", weights, "--data", data,
                     "--batches", "100000", ok=False)
        self.assertOneLineError(result, "--batches 100000:", "would count sequences twice")

    def test_plot_averages_each_modality_over_its_steps(self):
        run_dir = self.path("plot-run")
        os.makedirs(run_dir)
        json.dump({"model": "m", "tokens_per_step": 10, "train_flops_per_token": 1.0},
                  open(os.path.join(run_dir, "run.json"), "w"))
        lines = [{"step": 1, "loss": 6.0, "loss.text": 6.0, "loss.image": None,
                  "targets.text": 5, "targets.image": 0},
                 {"step": 2, "loss": 6.1, "loss.text": 5.0, "loss.image": 7.0,
                  "targets.text": 3, "targets.image": 2},
                 {"step": 3, "loss": 1e999, "loss.text": 4.0, "loss.image": None,
                  "targets.text": 5, "targets.image": 0}]
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            for line in lines:
                f.write(json.dumps(line).replace("Infinity", "1e999") + "\n")
        svg = self.path("plot.svg")
        result = run(MOMARUN, "plot", run_dir, "-o", svg, "--smooth", "3")
        row = [l for l in result.stdout.splitlines() if l.startswith("plot-run")][0].split()
        # loss (finite steps 1, 2), loss.image (step 2 alone), loss.text (1-3)
        self.assertAlmostEqual(float(row[2]), 6.05, places=4)
        self.assertAlmostEqual(float(row[3]), 7.0, places=4)
        self.assertAlmostEqual(float(row[4]), 5.0, places=4)
        self.assertNotIn("nan", open(svg).read().lower())
        self.assertNotIn("inf", open(svg).read().lower())

    def test_non_finite_weights_are_refused(self):
        artifact, description = self.compile("mod_moe_4t4i_aux")
        weights = self.path("nan-w.safetensors")
        run(MOMARUN, "init", artifact, "-o", weights)
        tensors = {k: v.numpy().copy() for k, v in R.read_safetensors(weights).items()}
        name = sorted(tensors)[3]
        tensors[name].flat[1] = np.nan
        R.write_safetensors(weights, tensors)
        prompt = self.path("nan-prompt.txt")
        open(prompt, "w").write("1 2 3\n")
        result = run(MOMARUN, "generate", artifact, "--weights", weights, "--prompt",
                     prompt, "--max-new", "2", ok=False)
        self.assertOneLineError(result, f"{name} holds NaN")
        # Upcycling from a diverged stage-1 checkpoint.
        one, _ = self.compile("mod_moe_1t1i")
        source = self.path("nan-1t1i.safetensors")
        run(MOMARUN, "init", one, "-o", source)
        tensors = {k: v.numpy().copy() for k, v in R.read_safetensors(source).items()}
        tensors["output.weight"].flat[0] = np.inf
        R.write_safetensors(source, tensors)
        result = run(MOMARUN, "upcycle", "--from", source, "--to", artifact, "-o",
                     self.path("up.safetensors"), ok=False)
        self.assertOneLineError(result, "output.weight holds +Inf")

    @unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
    def test_a_resume_that_changes_the_batch_needs_a_flag(self):
        sharded, description = self.compile("moe_4t4i", fsdp=True)
        one, _ = self.compile("moe_4t4i")
        data = self.corpus(description)
        out = self.path("batch-change")
        run(MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train", sharded, "--data",
            data, "--steps", "1", "--out", out)
        result = run(MOMARUN, "train", one, "--data", data, "--steps", "1", "--out",
                     out, "--resume", ok=False)
        self.assertOneLineError(result, "written by a run of 4 sequences per step; "
                                "this one takes 2", "--allow-batch-change")
        run(MOMARUN, "train", one, "--data", data, "--steps", "1", "--out", out,
            "--resume", "--allow-batch-change")

    def test_control_characters_are_escaped(self):
        result = run(MOMARUN, "init", "art\x1b[2J\x07", "-o", self.path("x"), ok=False)
        self.assertNotIn("\x1b", result.stderr)
        self.assertNotIn("\x07", result.stderr)
        self.assertIn("art\\x1b[2J\\x07", result.stderr)
        # momac quotes the description's keys.
        description = self.path("escape.json")
        with open(description, "w") as f:
            json.dump({"name": "x", "d_model\x1b]0;owned\x07": 8}, f)
        result = run(MOMAC, description, "-o", self.path("escape-art"), ok=False)
        self.assertNotIn("\x1b", result.stderr)
        self.assertNotIn("\x07", result.stderr)
        self.assertIn("\\x1b]0;owned\\x07", result.stderr)


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


class TheRightGemmKernels(ReliabilityTestCase):
    """OpenBLAS falls back to SSE3 kernels on CPUs newer than it; momarun
    notices before loading it and says which kernels a run uses."""

    def first_line(self, extra):
        artifact, description = self.compile("dense")
        data = self.corpus(description)
        out = self.path("gemm-run")
        shutil.rmtree(out, ignore_errors=True)
        env = {k: v for k, v in ENV.items() if k != "OPENBLAS_CORETYPE"}
        env.update(extra)
        result = run(MOMARUN, "train", artifact, "--data", data, "--steps", "1",
                     "--out", out, env=env)
        return result.stdout.splitlines()[0]

    def test_a_fallback_is_replaced_and_every_run_names_its_kernels(self):
        flags = cpu_flags()
        if not {"avx2", "fma"} <= flags:
            self.skipTest("the CPU has no AVX2 and FMA")
        wide = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
        expected = "SkylakeX" if wide else "Haswell"
        # As on a CPU that OpenBLAS 0.3.21 does not know.
        line = self.first_line({"MOMA_TEST_OPENBLAS_DETECTS": "Prescott"})
        self.assertRegex(line, r"^momarun: f32 GEMM: OpenBLAS \d+\.\d+\.\d+, "
                         + expected + r" kernels \(set by momarun: by itself "
                         r"OpenBLAS took this CPU for Prescott\)$")
        # The user's choice stands.
        line = self.first_line({"OPENBLAS_CORETYPE": "Prescott"})
        self.assertRegex(line, r"Prescott kernels \(OPENBLAS_CORETYPE\)$")
        # On this CPU, OpenBLAS's own choice where it knows the CPU.
        line = self.first_line({})
        self.assertRegex(line, r"^momarun: f32 GEMM: OpenBLAS [0-9.]+, \w+ kernels")


if __name__ == "__main__":
    unittest.main()
