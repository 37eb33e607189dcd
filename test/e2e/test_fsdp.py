"""End-to-end FSDP: `mpirun -np R momarun train` on an artifact compiled with
`momac --fsdp` against one rank running R micro-batches (MODEL_SPEC section
8): the same losses and final weights, 1/R of the state per rank, resume on
another rank count, and a lost or stalled rank ending the run.

Needs the build (momac, momarun) and OpenMPI's mpirun: MOMAC_BUILD_DIR,
default ./build. Run:
  /usr/bin/python3 -m unittest discover -s test/e2e -p 'test_fsdp.py'
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import moma_reference as R  # noqa: E402
from test_momarun import compile_cached, write_indexed_dataset  # noqa: E402
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")
TINY = os.path.join(ROOT, "examples", "models", "tiny")
MPIRUN = shutil.which("mpirun")
# One thread per rank: ranks are processes; root is allowed (containers).
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

TOLERANCE = 1e-5


def run(*args, env=ENV):
    result = subprocess.run(args, capture_output=True, text=True, env=env,
                            timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def mpirun(ranks, *args):
    return run(MPIRUN, "--oversubscribe", "-np", str(ranks), MOMARUN, *args)


def read_safetensors(path):
    tensors, metadata = R.read_safetensors(path, with_metadata=True)
    return {name: t.numpy() for name, t in tensors.items()}, metadata


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


class FsdpTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = {}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, *names):
        return os.path.join(self.tmp.name, *names)

    def compile(self, variant, micro_batches=1, fsdp=False, target=None,
                **train):
        """examples/models/tiny/<variant>.json with train.micro_batches."""
        with open(os.path.join(TINY, variant + ".json")) as f:
            desc = json.load(f)
        desc.setdefault("train", {}).update(micro_batches=micro_batches,
                                            **train)
        tag = (f"{variant}-m{micro_batches}{'-fsdp' if fsdp else ''}"
               f"{'-' + target if target else ''}")
        description = self.path(tag + ".json")
        with open(description, "w") as f:
            json.dump(desc, f)
        artifact = self.path(tag)
        if not os.path.exists(artifact):
            compile_cached(description, artifact,
                           [*(["--fsdp"] if fsdp else []),
                            *(["--target=" + target] if target else [])])
        return artifact, description

    def corpus(self, description):
        prefix = self.path("data-" + os.path.basename(description))
        if not os.path.exists(prefix + ".bin"):
            run(MOMARUN, "corpus", description, "--out", prefix,
                "--synthetic", "120")
        return prefix

    def assertCurvesEqual(self, one, many, steps):
        self.assertEqual([m["step"] for m in one], list(range(1, steps + 1)))
        self.assertEqual([m["step"] for m in many], list(range(1, steps + 1)))
        for a, b in zip(one, many):
            for key in a:
                if a[key] is None or b[key] is None:
                    # A step without a modality's targets: none on both.
                    self.assertEqual(a[key], b[key], f"step {a['step']} {key}")
                elif key.startswith("loss") or key in ("grad_norm", "lr"):
                    self.assertLessEqual(
                        abs(a[key] - b[key]), TOLERANCE * abs(a[key]) + 1e-12,
                        f"step {a['step']} {key}: {a[key]} on one rank, "
                        f"{b[key]} sharded")

    def assertWeightsEqual(self, one_checkpoint, consolidated):
        a, meta_a = read_safetensors(one_checkpoint)
        b, meta_b = read_safetensors(consolidated)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            scale = max(float(np.max(np.abs(a[name]))), 1e-30)
            self.assertLessEqual(float(np.max(np.abs(a[name] - b[name]))),
                                 TOLERANCE * scale, name)
        for key in ("step", "data_position"):
            self.assertEqual(meta_a[key], meta_b[key])


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class ShardedTrainingMatchesOneRank(FsdpTestCase):
    """R ranks with one micro-batch each = one rank with R micro-batches."""

    def check(self, variant, ranks, steps=5):
        one, description = self.compile(variant, micro_batches=ranks)
        sharded, _ = self.compile(variant, fsdp=True)
        data = self.corpus(description)
        one_run, many_run = self.path(variant + "-one"), self.path(
            variant + "-many")
        run(MOMARUN, "train", one, "--data", data, "--steps", str(steps),
            "--out", one_run)
        out = mpirun(ranks, "train", sharded, "--data", data, "--steps",
                     str(steps), "--out", many_run)
        self.assertIn(f"on {ranks} ranks", out.stdout)
        self.assertCurvesEqual(metrics(one_run), metrics(many_run), steps)
        consolidated = self.path(variant + "-consolidated.safetensors")
        run(MOMARUN, "ckpt", "consolidate", many_run, "-o", consolidated)
        self.assertWeightsEqual(os.path.join(one_run, "checkpoint.safetensors"),
                                consolidated)
        return one_run, many_run

    def test_moe_4t4i_on_two_ranks(self):
        self.check("moe_4t4i", 2)

    def test_mod_moe_4t4i_on_two_ranks(self):
        self.check("mod_moe_4t4i", 2)

    def test_dense_on_four_ranks(self):
        self.check("dense", 4, steps=3)

    def test_initial_weights_from_a_file(self):
        # --init W: each rank reads W one tensor at a time and keeps its
        # shard of each; the run is one rank's from the same file.
        one, description = self.compile("moe_4t4i", micro_batches=2)
        sharded, _ = self.compile("moe_4t4i", fsdp=True)
        data = self.corpus(description)
        weights = self.path("init-w.safetensors")
        run(MOMARUN, "init", one, "-o", weights, "--seed", "77")
        run(MOMARUN, "train", one, "--data", data, "--steps", "2", "--out",
            self.path("init-one"), "--init", weights)
        mpirun(2, "train", sharded, "--data", data, "--steps", "2", "--out",
               self.path("init-many"), "--init", weights)
        self.assertCurvesEqual(metrics(self.path("init-one")),
                               metrics(self.path("init-many")), 2)
        # And not the fresh initialization's curve.
        run(MOMARUN, "train", one, "--data", data, "--steps", "1", "--out",
            self.path("init-fresh"))
        self.assertNotEqual(metrics(self.path("init-fresh"))[0]["loss"],
                            metrics(self.path("init-many"))[0]["loss"])

    def test_cuda_mapping_of_the_sharded_step(self):
        # The CUDA target's mapping of @fsdp_grad (tiles as blocks, host
        # code as launches, the gathers between them), run on the CPU:
        # against one rank of the same mapping.
        one, description = self.compile("moe_4t4i", micro_batches=2,
                                        target="cuda-emulated")
        sharded, _ = self.compile("moe_4t4i", fsdp=True,
                                  target="cuda-emulated")
        data = self.corpus(description)
        run(MOMARUN, "train", one, "--data", data, "--steps", "3", "--out",
            self.path("emulated-one"))
        result = mpirun(2, "train", sharded, "--data", data, "--steps", "3",
                        "--out", self.path("emulated-many"))
        self.assertCurvesEqual(metrics(self.path("emulated-one")),
                               metrics(self.path("emulated-many")), 3)
        # The shards lived in (emulated) device memory: each kept buffer
        # went up once, and only the checkpoint brought the weights and
        # moments down (three buffers per unit), whatever the step count.
        with open(os.path.join(sharded, "manifest.json")) as f:
            units = len(json.load(f)["fsdp"]["units"])
        copies = re.search(r"shards \(([0-9.]+) MB\) stayed in device memory: "
                           r"(\d+) uploads .*?, (\d+) downloads .* the units' "
                           r"collectives ran over (\S+)", result.stderr)
        self.assertIsNotNone(copies, result.stderr[-2000:])
        uploads, downloads = int(copies.group(2)), int(copies.group(3))
        # params, grads, both moments per unit; the reduce-scatter buffer;
        # four optimizer staging buffers.
        self.assertLessEqual(uploads, 4 * units + 5)
        self.assertEqual(downloads, 3 * units)
        self.assertEqual(copies.group(4), "mpi")

    def test_router_noise_is_drawn_as_one_rank_would(self):
        # moe.gumbel: rank r uses the noise of global micro-batch r.
        one, description = self.compile("moe_4t4i", micro_batches=2)
        with open(description) as f:
            desc = json.load(f)
        desc["moe"]["gumbel"] = True
        for fsdp, micro in ((False, 2), (True, 1)):
            desc["train"]["micro_batches"] = micro
            path = self.path(f"gumbel-{fsdp}.json")
            with open(path, "w") as f:
                json.dump(desc, f)
            run(MOMAC, path, "-o", self.path(f"gumbel-{fsdp}"),
                *(["--fsdp"] if fsdp else []))
        data = self.corpus(description)
        run(MOMARUN, "train", self.path("gumbel-False"), "--data", data,
            "--steps", "3", "--out", self.path("gumbel-one"))
        mpirun(2, "train", self.path("gumbel-True"), "--data", data,
               "--steps", "3", "--out", self.path("gumbel-many"))
        self.assertCurvesEqual(metrics(self.path("gumbel-one")),
                               metrics(self.path("gumbel-many")), 3)

    def test_each_rank_holds_a_share_of_the_state(self):
        sharded, description = self.compile("moe_4t4i", fsdp=True)
        data = self.corpus(description)
        single, sharded_run = self.path("mem-one"), self.path("mem-many")
        run(MOMARUN, "train", sharded, "--data", data, "--steps", "1",
            "--out", single)
        mpirun(2, "train", sharded, "--data", data, "--steps", "1", "--out",
               sharded_run)
        with open(os.path.join(single, "memory.rank-0.json")) as f:
            whole = json.load(f)
        predicted = json.loads(run(MOMAC, description, "--report", "--json",
                                   "--ranks", "2").stdout)
        predicted = predicted["memory_bytes_per_rank"]
        for rank in range(2):
            with open(os.path.join(sharded_run, f"memory.rank-{rank}.json")) as f:
                part = json.load(f)
            self.assertEqual((part["rank"], part["ranks"]), (rank, 2))
            for key in ("parameter_bytes", "gradient_bytes", "optimizer_bytes"):
                share = whole[key] / 2
                self.assertLess(abs(part[key] - share), 0.1 * share,
                                f"rank {rank} {key}: {part[key]} for "
                                f"{whole[key]} on one rank")
            # momac --report --ranks 2 predicts exactly what momarun holds.
            for key in ("parameter", "gradient", "optimizer", "gathered"):
                self.assertEqual(part[key + "_bytes"],
                                 predicted[key + "s" if key != "optimizer"
                                           and key != "gathered" else key])


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class ResumeOnAnotherRankCount(FsdpTestCase):
    """A checkpoint of R ranks continues on R' ranks with the same curve."""

    def test_two_ranks_to_one_and_one_to_two(self):
        one, description = self.compile("moe_4t4i", micro_batches=2)
        sharded, _ = self.compile("moe_4t4i", fsdp=True)
        data = self.corpus(description)
        straight = self.path("straight")
        run(MOMARUN, "train", one, "--data", data, "--steps", "6", "--out",
            straight)
        # 2 ranks, then 1.
        a = self.path("two-then-one")
        mpirun(2, "train", sharded, "--data", data, "--steps", "3", "--out", a)
        run(MOMARUN, "train", one, "--data", data, "--steps", "3", "--out", a,
            "--resume")
        self.assertCurvesEqual(metrics(straight), metrics(a), 6)
        # 1 rank, then 2.
        b = self.path("one-then-two")
        run(MOMARUN, "train", one, "--data", data, "--steps", "3", "--out", b)
        mpirun(2, "train", sharded, "--data", data, "--steps", "3", "--out", b,
               "--resume")
        self.assertCurvesEqual(metrics(straight), metrics(b), 6)
        self.assertEqual(sorted(f for f in os.listdir(b)
                                if f.startswith("checkpoint")),
                         ["checkpoint.shards.json",
                          "checkpoint.step-6.shard-0-of-2.safetensors",
                          "checkpoint.step-6.shard-1-of-2.safetensors"])


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class NonFiniteStepsOnRanks(FsdpTestCase):
    """A diverging run (lr 50, one warm-up step) on 2 ranks skips the same
    non-finite steps with --skip-nonfinite as one rank with 2 micro-batches,
    stops on the same step, and leaves the last good state (finite, at the
    same step and data position) in its shard checkpoints."""

    def train(self, command, out):
        result = subprocess.run(
            [*command, "--steps", "30", "--checkpoint-every", "2",
             "--skip-nonfinite", "2", "--out", out],
            capture_output=True, text=True, env=ENV, timeout=600)
        return result, metrics(out)

    def test_skips_and_stops_as_one_rank(self):
        diverging = dict(lr=50, min_lr=1, warmup_steps=1)
        one, description = self.compile("moe_4t4i", micro_batches=2,
                                        **diverging)
        sharded, _ = self.compile("moe_4t4i", fsdp=True, **diverging)
        data = self.corpus(description)
        one_run, many_run = self.path("one"), self.path("many")
        one_result, one_lines = self.train(
            [MOMARUN, "train", one, "--data", data], one_run)
        many_result, many_lines = self.train(
            [MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train", sharded,
             "--data", data], many_run)
        self.assertEqual(one_result.returncode, 1, one_result.stderr)
        self.assertNotEqual(many_result.returncode, 0, many_result.stderr)
        skipped = [line["step"] for line in many_lines if line.get("skipped")]
        self.assertEqual(len(skipped), 2, many_lines)
        self.assertEqual(
            [(line["step"], line.get("skipped")) for line in many_lines],
            [(line["step"], line.get("skipped")) for line in one_lines])
        # Rank 0 warns once per skipped step and says why the run stopped,
        # once; the ranks stop together, so none aborts the others.
        self.assertEqual(many_result.stderr.count("update skipped"), 2)
        stop = many_lines[-1]["step"]
        self.assertEqual(many_result.stderr.count(f"error: step {stop}:"), 1,
                         many_result.stderr)
        self.assertNotIn("MPI_ABORT", many_result.stderr)
        self.assertIn("the last good state", many_result.stderr)
        consolidated = self.path("consolidated.safetensors")
        run(MOMARUN, "ckpt", "consolidate", many_run, "-o", consolidated)
        weights, metadata = read_safetensors(consolidated)
        self.assertEqual(int(metadata["step"]), stop - 1)
        for name, value in weights.items():
            self.assertTrue(bool(np.isfinite(value).all()), name)
        # The same progress as one rank's. (The weights themselves agree
        # only roughly: at lr 50 the last bits of the first steps' sums,
        # taken in another order across ranks, grow with every update.)
        _, one_metadata = read_safetensors(
            os.path.join(one_run, "checkpoint.safetensors"))
        for key in ("step", "data_position", "rng"):
            self.assertEqual(metadata[key], one_metadata[key], key)


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class BalancedModalityMix(FsdpTestCase):
    """--balance-modalities on a corpus of one-modality documents in runs of
    eight: the plain split gives one rank only text and the other only
    image; the balanced deal gives both the model's 4:4 expert mix."""

    def test_spread_shrinks(self):
        sharded, description = self.compile("moe_4t4i", fsdp=True)
        with open(description) as f:
            desc = json.load(f)
        seq = desc["seq_len"]
        rng = np.random.default_rng(5)
        documents = []
        for block in range(16):
            low, high = (0, 256) if block % 2 == 0 else (256, 512)
            documents += [rng.integers(low, high, size=seq) for _ in range(8)]
        data = self.path("uneven")
        write_indexed_dataset(data, documents)
        spreads, totals = {}, {}
        for balanced in (False, True):
            out = self.path(f"uneven-{balanced}")
            mpirun(2, "train", sharded, "--data", data, "--steps", "4",
                   "--out", out,
                   *(["--balance-modalities"] if balanced else []))
            lines = metrics(out)
            spreads[balanced] = np.mean([m["modality_share_spread"]
                                         for m in lines])
            totals[balanced] = [np.sum(m["modality_targets_by_rank"], axis=0)
                                .tolist() for m in lines]
            self.assertTrue(all(np.isfinite(m["loss"]) for m in lines))
        # The same sequences per step, dealt differently.
        self.assertEqual(totals[False], totals[True])
        self.assertGreater(spreads[False], 0.9)
        self.assertLess(spreads[True], 0.1)


def rank_pids(marker):
    """The PIDs of the momarun ranks whose command line holds `marker`, by
    their MPI rank (OMPI_COMM_WORLD_RANK in their environment)."""
    pids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
            if not cmdline or not cmdline[0].endswith(b"momarun") or \
                    marker.encode() not in cmdline:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                        pids[int(item.split(b"=")[1])] = int(pid)
        except OSError:
            continue
    return pids


@unittest.skipUnless(MPIRUN, "needs mpirun (OpenMPI)")
class LostRankEndsTheRun(FsdpTestCase):
    """A rank killed or stalled mid-run stops the others within the limit,
    with an error naming the rank or the collective: never a silent hang."""

    def start(self, name, *extra):
        sharded, description = self.compile("moe_4t4i", fsdp=True)
        data = self.corpus(description)
        out = self.path(name)
        process = subprocess.Popen(
            [MPIRUN, "--oversubscribe", "-np", "2", MOMARUN, "train", sharded,
             "--data", data, "--steps", "100000", "--out", out,
             "--checkpoint-every", "100000", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=ENV)
        # Until both ranks train (the first step's metrics are written).
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.exists(os.path.join(out, "metrics.jsonl")) and \
                    os.path.getsize(os.path.join(out, "metrics.jsonl")):
                break
            time.sleep(0.2)
        pids = rank_pids(out)
        self.assertEqual(sorted(pids), [0, 1])
        return process, pids

    def finish(self, process, limit):
        start = time.time()
        try:
            output, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            self.fail(f"the run did not end within {limit} s")
        return output, time.time() - start

    def test_killed_rank(self):
        process, pids = self.start("killed")
        os.kill(pids[1], signal.SIGKILL)
        output, seconds = self.finish(process, 60)
        self.assertNotEqual(process.returncode, 0)
        self.assertLess(seconds, 60)
        self.assertRegex(output, r"process rank 1 .*exited on signal 9")

    def test_stalled_rank(self):
        process, pids = self.start("stalled", "--comm-timeout", "3")
        os.kill(pids[1], signal.SIGSTOP)
        try:
            output, seconds = self.finish(process, 60)
        finally:
            try:
                os.kill(pids[1], signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.assertNotEqual(process.returncode, 0)
        self.assertLess(seconds, 30)
        # Whichever collective rank 0 was in: a gather, a reduce-scatter or
        # the step's all-reduce.
        self.assertRegex(output, r"rank 0 of 2: .+ did not "
                                 r"complete within 3\.00 s: another rank is "
                                 r"lost or stalled .*; rank\(s\) 1 do not "
                                 r"answer")


if __name__ == "__main__":
    unittest.main()
