"""The GPU bundle's checks (run.sh runs this): each section runs, fails or is
skipped on its own, and the report is rewritten after every section, so a run
cut short still leaves one. Standard library only (numpy speeds up the
gradient comparisons; PyTorch is needed only for the eager comparison).

Sections:
  environment  GPU, driver, CUDA, the libraries loaded, the bundle's origin
  unit         the CUDA runtime's GoogleTest units (GEMM layouts, k = 0, top-k)
  numerics     momarun grad on the GPU against the CPU's gradients, every
               tensor; a top-k choice whose margin on the CPU was below the
               fp32 noise is reported as a possible flip, not a kernel error
  training     20 steps from the bundle's weights against the CPU's losses;
               the training state goes up to the GPU once
  fsdp         the sharded step on one rank (NCCL) against the CPU's and
               against the unsharded step
  sanitizer    compute-sanitizer memcheck (caching allocator off) over a
               training step, racecheck over a gradient step
  speed        momarun tokens/s and fraction of the dense peak, side by side
               with the eager PyTorch step in bf16 autocast, eager and compiled
  cublas       cuBLAS against cuBLASLt on the steps' bf16 GEMMs

A check that fails with a GPU error is run again with
MOMA_CUDA_SYNC_LAUNCHES=1, which names the kernel or library call that failed.
"""
import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tensors as T  # noqa: E402

# Dense peaks of the SXM parts (NVIDIA's data sheets): bf16 on the tensor
# cores without sparsity, fp32 on the CUDA cores. H100 and H200 share them.
PEAKS = {"H100": {"bf16": 989.4e12, "fp32": 66.9e12},
         "H200": {"bf16": 989.4e12, "fp32": 66.9e12}}
SECTIONS = ["environment", "unit", "numerics", "training", "fsdp", "sanitizer",
            "speed", "cublas"]


class Checks:
    def __init__(self, bundle_dir, out, emulated, budget):
        self.dir = bundle_dir
        self.out = out
        self.emulated = emulated
        self.deadline = time.time() + budget
        self.started = time.time()
        with open(os.path.join(bundle_dir, "bundle.json")) as f:
            self.bundle = json.load(f)
        self.work = tempfile.mkdtemp(prefix="gpu-report-")
        self.momarun = os.path.join(bundle_dir, "bin", "momarun")
        # The artifacts, inputs and expectations travel packed.
        self.payload = bundle_dir
        packed = os.path.join(bundle_dir, "payload.tar.xz")
        if os.path.exists(packed):
            self.payload = os.path.join(self.work, "payload")
            with tarfile.open(packed) as tar:
                tar.extractall(self.payload)
        self.sections = {name: [] for name in SECTIONS}
        self.environment = {}
        self.weights = {}
        self.gpu_name = ""
        self.gpu_total_gib = 0.0
        self.log_path = os.path.join(out, "gpu-run.log")

    # --- running commands ------------------------------------------------

    def left(self):
        return self.deadline - time.time()

    def log(self, text):
        with open(self.log_path, "a") as f:
            f.write(text + "\n")

    def run(self, args, timeout=300, env=None):
        """(exit code, stdout + stderr, seconds); never raises. 124: timed
        out."""
        args = [str(a) for a in args]
        environment = dict(os.environ, **(env or {}))
        self.log(f"$ {' '.join(args)}" + (f"   [{env}]" if env else ""))
        started = time.time()
        try:
            result = subprocess.run(args, capture_output=True, text=True,
                                    env=environment, timeout=max(1, timeout))
            code, output = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as expired:
            code = 124
            output = ((expired.stdout or b"").decode(errors="replace") if isinstance(
                expired.stdout, bytes) else (expired.stdout or "")) + \
                f"\n(timed out after {timeout:.0f} s)"
        except OSError as error:
            code, output = 127, str(error)
        seconds = time.time() - started
        self.log(output.rstrip()[-20000:])
        self.log(f"(exit {code}, {seconds:.1f} s)")
        return code, output, seconds

    def run_step(self, args, timeout=300, env=None):
        """run(), and when a GPU step fails, once more with every launch
        synchronized: the error then names the kernel or library call."""
        code, output, seconds = self.run(args, timeout, env)
        if code in (0, 124) or self.emulated or "GPU" not in output and "CUDA" not in output:
            return code, output, seconds, ""
        code2, output2, _ = self.run(args, timeout, dict(env or {}, MOMA_CUDA_SYNC_LAUNCHES="1"))
        named = last_error(output2) if code2 else "passed when synchronized after every launch"
        return code, output, seconds, "synchronized rerun: " + named

    # --- the report ------------------------------------------------------

    def add(self, section, check, result, detail="", **data):
        row = {"check": check, "result": result, "detail": detail}
        row.update(data)
        self.sections[section].append(row)
        print(f"[{section}] {check}: {result}{' - ' + detail if detail else ''}",
              flush=True)

    def write(self):
        counts = {}
        for rows in self.sections.values():
            for row in rows:
                counts[row["result"]] = counts.get(row["result"], 0) + 1
        report = {"bundle": {k: self.bundle.get(k) for k in
                             ("target", "models", "commit", "built", "built_on")},
                  "mode": "emulated" if self.emulated else "gpu",
                  "environment": self.environment,
                  "seconds": round(time.time() - self.started, 1),
                  "summary": counts, "sections": self.sections}
        with open(os.path.join(self.out, "gpu-report.json"), "w") as f:
            json.dump(report, f, indent=1)
        lines = [f"# momac GPU check: {self.environment.get('device', '?')}", "",
                 f"Bundle {self.bundle.get('commit')} ({self.bundle.get('target')} "
                 f"artifacts, built {self.bundle.get('built')} on "
                 f"{self.bundle.get('built_on')}); run {'emulated on this CPU' if self.emulated else 'on the GPU'} "
                 f"in {report['seconds']:.0f} s. Results: "
                 + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", ""]
        for name in SECTIONS:
            lines += [f"## {name}", ""]
            rows = self.sections[name]
            if name == "environment":
                lines += [f"- {k}: {v}" for k, v in self.environment.items()] + [""]
            if name == "cublas" and any("table" in r for r in rows):
                lines += [r["table"] for r in rows if "table" in r] + [""]
            if rows:
                lines += ["| check | result | detail |", "|---|---|---|"]
                lines += [f"| {r['check']} | {r['result']} | {r['detail']} |" for r in rows]
            else:
                lines.append("(not reached)")
            lines.append("")
        with open(os.path.join(self.out, "gpu-report.md"), "w") as f:
            f.write("\n".join(lines))

    def section(self, name, body):
        if self.left() <= 0:
            self.add(name, name, "skipped", "the time budget was spent")
        else:
            try:
                body()
            except Exception as error:  # a broken check must not stop the others
                self.add(name, name, "FAIL", f"the check itself failed: {error!r}")
        self.write()

    # --- sections --------------------------------------------------------

    def check_environment(self):
        env = self.environment
        env["bundle"] = (f"{self.bundle['commit']}, {self.bundle['target']}, "
                         f"models: {self.bundle['models']}")
        env["host"] = f"{platform.node()}, {cpu_model()}, {os.cpu_count()} cores"
        if self.emulated:
            env["device"] = f"this CPU ({cpu_model()}), cuda-emulated artifacts"
            self.add("environment", "device", "info", env["device"])
        else:
            code, output, _ = self.run(["nvidia-smi", "--query-gpu=name,driver_version,"
                                        "memory.total,memory.free", "--format=csv,noheader"],
                                       timeout=30)
            if code != 0:
                self.add("environment", "nvidia-smi", "FAIL", last_line(output))
            else:
                name, driver, total, free = [x.strip() for x in output.splitlines()[0].split(",")]
                self.gpu_name = name
                self.gpu_total_gib = float(total.split()[0]) / 1024
                env["device"] = name
                env["driver"] = driver
                env["memory"] = f"{total} total, {free} free"
                code, output, _ = self.run(["nvidia-smi"], timeout=30)
                cuda = re.search(r"CUDA Version: ([0-9.]+)", output)
                env["cuda"] = cuda.group(1) if cuda else "?"
                self.add("environment", "device", "info",
                         f"{name}, driver {driver}, CUDA {env['cuda']}, {total}")
        env["libraries"] = os.environ.get("MOMA_BUNDLE_LIBRARIES", "")
        missing = [item.split("=")[0] for item in env["libraries"].split()
                   if item.endswith("=missing")]
        # What the loader really resolves for momarun and an artifact.
        art = self.bundle["numerics"][0]["artifact"] if self.bundle["numerics"] else None
        binaries = [("bin/momarun", self.momarun)]
        if art:
            binaries.append((art + "/model.so", os.path.join(self.payload, art, "model.so")))
        for label, path in binaries:
            code, output, _ = self.run(["ldd", path], timeout=30)
            unresolved = [l.strip() for l in output.splitlines() if "not found" in l]
            resolved = sorted({m.group(1) for m in re.finditer(r"=> (\S+)", output)
                               if re.search(r"cu|nccl", m.group(1))})
            env["ldd " + label] = ", ".join(resolved) or "no CUDA libraries"
            self.add("environment", "ldd " + label, "FAIL" if unresolved else "ok",
                     "; ".join(unresolved) if unresolved else ", ".join(resolved) or "-")
        if missing and not self.emulated:
            self.add("environment", "CUDA libraries", "FAIL", "not found: " + ", ".join(missing))
        torch_python = os.environ.get("MOMA_TORCH_PYTHON", "")
        if torch_python:
            code, output, _ = self.run([torch_python, "-c", "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"], timeout=60)
            env["python"] = f"{torch_python}: {output.strip()}"
        else:
            env["python"] = f"{sys.executable} {platform.python_version()}, no PyTorch"

    def check_unit(self):
        binary = os.path.join(self.dir, "bin", "momac-cuda-unittests")
        if not os.path.exists(binary):
            self.add("unit", "momac-cuda-unittests", "skipped", "not in the bundle (built without CUDA)")
            return
        code, output, seconds, rerun = self.run_step([binary, "--gtest_brief=0"],
                                                     timeout=min(180, self.left()))
        passed = re.search(r"\[  PASSED  \] (\d+) test", output)
        skipped = re.search(r"\[  SKIPPED \] (\d+) test", output)
        failed = re.findall(r"\[  FAILED  \] (\S+)", output)
        detail = (f"{passed.group(1) if passed else 0} passed, "
                  f"{skipped.group(1) if skipped else 0} skipped (no GPU)"
                  f"{', failed: ' + ', '.join(sorted(set(failed))) if failed else ''}; {seconds:.0f} s")
        self.add("unit", "CUDA runtime units", "ok" if code == 0 else "FAIL",
                 detail + (f"; {rerun}" if rerun else ""))

    def weights_of(self, entry):
        """The weights of a check's model: momarun init's with the seed the
        CPU used, checked against the hash of the CPU's (once per model)."""
        spec = entry["weights"]
        model = entry["model"]
        if model not in self.weights:
            path = os.path.join(self.work, model + ".weights.safetensors")
            fp32 = os.path.join(self.payload, "art", model + ".fp32")
            code, output, _ = self.run([self.momarun, "init", fp32, "-o", path,
                                        "--seed", spec["init_seed"]], timeout=300)
            problem = "" if code == 0 else "momarun init failed: " + last_line(output)
            if not problem and sha256(path) != spec["sha256"]:
                problem = ("momarun init drew other weights than on the CPU "
                           "(sha256 differs): the gradients cannot be compared")
            self.weights[model] = (path, problem)
        return self.weights[model]

    def check_numerics(self):
        flip_margin = self.bundle["flip_margin"]
        for entry in self.bundle["numerics"]:
            name = f"grad {entry['model']} {entry['precision']} B={entry['batch']}"
            if self.left() < 20:
                self.add("numerics", name, "skipped", "the time budget was spent")
                continue
            weights, problem = self.weights_of(entry)
            if problem:
                self.add("numerics", name, "FAIL", problem)
                continue
            out = os.path.join(self.work, "grad.safetensors")
            code, output, seconds, rerun = self.run_step(
                [self.momarun, "grad", os.path.join(self.payload, entry["artifact"]),
                 "--weights", weights, "--tokens", os.path.join(self.payload, entry["tokens"]),
                 "--out", out], timeout=min(300, self.left()))
            if code != 0:
                self.add("numerics", name, "FAIL", last_line(output) +
                         (f"; {rerun}" if rerun else ""))
                continue
            expected = os.path.join(self.payload, entry["expected"])
            if expected.endswith(".json"):
                with open(expected) as f:
                    expected = json.load(f)
            rows = T.compare(out, expected, entry["tolerance"])
            worst = max(rows.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1e-30))
            bad = sorted(n for n, (_, _, ok) in rows.items() if not ok)
            margins = entry.get("margins", {})
            tightest = min(margins.items(), key=lambda kv: kv[1], default=(None, None))
            data = {"tensors": len(rows), "failed_tensors": bad,
                    "worst": {"tensor": worst[0], "error": worst[1][0],
                              "tolerance": worst[1][1]},
                    "min_margin": tightest[1], "seconds": round(seconds, 1)}
            detail = (f"worst {worst[1][0]:.1e} of tolerance {worst[1][1]:.1e} "
                      f"({worst[0]}) over {len(rows)} tensors; {seconds:.1f} s"
                      + ("; MoD padded path" if entry.get("mod") else ""))
            if not bad:
                self.add("numerics", name, "ok", detail, **data)
            elif tightest[1] is not None and tightest[1] < flip_margin:
                self.add("numerics", name, "flip",
                         f"{len(bad)} tensors differ ({detail}); the CPU's top-k margin "
                         f"at {tightest[0]} is {tightest[1]:.1e}, below {flip_margin:.0e}: "
                         "a rounding difference can choose other tokens there, so this "
                         "is a possible top-k flip, not a kernel error", **data)
            else:
                self.add("numerics", name, "FAIL",
                         f"{len(bad)} tensors differ, e.g. {', '.join(bad[:4])}; {detail}; "
                         f"smallest top-k margin {tightest[1]}", **data)

    def train(self, entry, artifact, steps, extra=(), name="train"):
        out = os.path.join(self.work, name)
        shutil.rmtree(out, ignore_errors=True)
        weights, problem = self.weights_of(entry)
        if problem:
            return 1, problem, 0.0, "", []
        code, output, seconds, rerun = self.run_step(
            [self.momarun, "train", os.path.join(self.payload, artifact), "--data",
             os.path.join(self.payload, entry["corpus"]), "--steps", steps, "--init",
             weights, "--out", out, *extra],
            timeout=min(300, self.left()))
        metrics = []
        if code == 0:
            with open(os.path.join(out, "metrics.jsonl")) as f:
                metrics = [json.loads(line) for line in f if line.strip()]
        return code, output, seconds, rerun, metrics

    def check_training(self):
        self.device_losses = {}
        for entry in self.bundle["training"]:
            name = f"train {entry['model']} {entry['precision']}, {entry['steps']} steps"
            code, output, seconds, rerun, metrics = self.train(
                entry, entry["artifact"], entry["steps"])
            if code != 0:
                self.add("training", name, "FAIL", last_line(output) +
                         (f"; {rerun}" if rerun else ""))
                continue
            losses = [m["loss"] for m in metrics]
            self.device_losses[entry["precision"]] = losses
            expected = entry["losses"]
            errors = [abs(a - b) / abs(b) for a, b in zip(losses, expected)
                      if a is not None and b is not None]
            # The first step is one gradient: fp32 agrees to the kernel
            # tolerance; later steps drift apart slowly (AdamW amplifies the
            # last bits), bf16 faster.
            first, drift = (1e-4, 2e-3) if entry["precision"] == "fp32" else (2e-3, 3e-2)
            ok = (len(losses) == entry["steps"] and len(errors) == entry["steps"]
                  and errors[0] <= first and max(errors) <= drift)
            copies = re.search(r"(\d+) uploads \(([0-9.]+) MB\), (\d+) downloads", output)
            once = bool(copies) and copies.group(1) == copies.group(3)
            detail = (f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (CPU {expected[0]:.4f} -> "
                      f"{expected[-1]:.4f}); step 1 rel. {errors[0]:.1e}, worst "
                      f"{max(errors):.1e}; {seconds / max(1, len(losses)):.2f} s/step"
                      if errors else "no losses")
            detail += (f"; state up {copies.group(1)}x ({copies.group(2)} MB), down "
                       f"{copies.group(3)}x (the checkpoint)" if copies else "; no copy count")
            self.add("training", name, "ok" if ok and once else "FAIL", detail,
                     losses=losses, expected=expected)

    def check_fsdp(self):
        entry = self.bundle["fsdp"]
        name = f"fsdp {entry['model']}, 1 rank, {entry['steps']} steps"
        code, output, seconds, rerun, metrics = self.train(
            entry, entry["artifact"], entry["steps"], extra=["--fsdp"], name="fsdp")
        if code != 0:
            self.add("fsdp", name, "FAIL", last_line(output) + (f"; {rerun}" if rerun else ""))
            return
        losses = [m["loss"] for m in metrics]
        versus_cpu = max(abs(a - b) / abs(b) for a, b in zip(losses, entry["losses"]))
        plain = getattr(self, "device_losses", {}).get("fp32", [])[:len(losses)]
        versus_plain = (max(abs(a - b) / abs(b) for a, b in zip(losses, plain))
                        if plain else None)
        backend = re.search(r"collectives ran over (.+)$", output, re.M)
        backend = backend.group(1).strip() if backend else "?"
        wanted = "single process" if self.emulated else "nccl"
        ok = (len(losses) == entry["steps"] and versus_cpu <= 1e-4 and backend == wanted
              and (versus_plain is None or versus_plain <= 1e-5))
        self.add("fsdp", name, "ok" if ok else "FAIL",
                 f"collectives over {backend}; losses vs the CPU's sharded step {versus_cpu:.1e}, "
                 f"vs the unsharded step here "
                 f"{'n/a' if versus_plain is None else f'{versus_plain:.1e}'}", losses=losses)

    def check_sanitizer(self):
        entry = next(e for e in self.bundle["training"] if e["precision"] == "fp32")
        grad = next(e for e in self.bundle["numerics"]
                    if e["model"] == entry["model"] and e["precision"] == "fp32"
                    and e["batch"] == 1)
        weights, problem = self.weights_of(entry)
        if problem:
            self.add("sanitizer", "sanitizer", "FAIL", problem)
            return
        train = [self.momarun, "train", os.path.join(self.payload, entry["artifact"]),
                 "--data", os.path.join(self.payload, entry["corpus"]), "--steps", 1,
                 "--init", weights, "--out", os.path.join(self.work, "sanitized")]
        grad_step = [self.momarun, "grad", os.path.join(self.payload, grad["artifact"]),
                     "--weights", weights, "--tokens", os.path.join(self.payload, grad["tokens"]),
                     "--out", os.path.join(self.work, "sanitized.safetensors")]
        if self.emulated:
            valgrind = shutil.which("valgrind")
            if not valgrind:
                self.add("sanitizer", "memcheck", "skipped", "compute-sanitizer needs a GPU; no valgrind here")
            else:
                code, output, seconds = self.run(
                    [valgrind, "--error-exitcode=9", "--errors-for-leak-kinds=none",
                     "--leak-check=no", *grad_step],
                    timeout=min(240, self.left()), env={"OMP_NUM_THREADS": "1"})
                errors = re.search(r"ERROR SUMMARY: (\d+) errors", output)
                self.add("sanitizer", "memcheck (valgrind, the emulated gradient step)",
                         "ok" if code == 0 and errors and errors.group(1) == "0" else "FAIL",
                         f"{errors.group(0) if errors else last_line(output)}; {seconds:.0f} s")
            self.add("sanitizer", "racecheck", "skipped",
                     "shared-memory races exist only on a GPU (compute-sanitizer racecheck)")
            return
        sanitizer = shutil.which("compute-sanitizer")
        if not sanitizer:
            self.add("sanitizer", "compute-sanitizer", "FAIL", "not found on PATH or in /usr/local/cuda/bin")
            return
        for tool, command, what in (("memcheck", train, "a training step"),
                                    ("racecheck", grad_step, "a gradient step, B=1")):
            if self.left() < 30:
                self.add("sanitizer", tool, "skipped", "the time budget was spent")
                continue
            code, output, seconds = self.run(
                [sanitizer, "--tool", tool, "--error-exitcode", "9",
                 *(["--leak-check", "no"] if tool == "memcheck" else []), *command],
                timeout=min(180, self.left()),
                env={"MOMA_CUDA_CACHING_ALLOCATOR": "0"})
            summary = re.search(r"(ERROR|RACECHECK) SUMMARY: (\d+) (errors|hazards)[^\n]*", output)
            clean = code == 0 and summary and summary.group(2) == "0"
            detail = (summary.group(0) if summary else last_line(output)) + \
                f"; {what}, caching allocator off, {seconds:.0f} s"
            first = re.search(r"========= (Invalid|Race|Error)[^\n]*\n[^\n]*\n[^\n]*", output)
            if first and not clean:
                detail += "; first: " + " ".join(first.group(0).split())[:300]
            self.add("sanitizer", tool, "ok" if clean else ("skipped" if code == 124 else "FAIL"),
                     detail)

    def corpus_for(self, entry, steps):
        prefix = os.path.join(self.work, entry["model"] + ".corpus")
        if not os.path.exists(prefix + ".idx"):
            with open(os.path.join(self.payload, entry["description"])) as f:
                desc = json.load(f)
            tokens = (steps + 2) * desc["train"]["batch_size"] * desc["seq_len"]
            # Synthetic documents average a few hundred tokens; plenty more.
            documents = max(200, tokens // 100)
            code, output, _ = self.run([self.momarun, "corpus",
                                        os.path.join(self.payload, entry["description"]),
                                        "--out", prefix, "--synthetic", documents,
                                        "--image-tokens", "1024"], timeout=300)
            if code != 0:
                raise RuntimeError("momarun corpus failed: " + last_line(output))
        return prefix

    def check_speed(self):
        peak = PEAKS.get(next((k for k in PEAKS if k in self.gpu_name), ""), None)
        torch_python = os.environ.get("MOMA_TORCH_PYTHON", "")
        free_host = host_available_bytes()
        for entry in self.bundle["speed"]:
            name = f"{entry['model']} {entry['precision']}"
            gib = entry["state_bytes"] / 2**30
            if not self.emulated and entry["min_gpu_gib"] > self.gpu_total_gib:
                self.add("speed", name, "skipped",
                         f"its training state ({gib:.0f} GiB) fits only a GPU of "
                         f"{entry['min_gpu_gib']} GiB or more (this one: {self.gpu_total_gib:.0f})")
                continue
            if not self.emulated and gib > 0.92 * self.gpu_total_gib:
                self.add("speed", name, "skipped",
                         f"its training state ({gib:.0f} GiB) does not fit this GPU "
                         f"({self.gpu_total_gib:.0f} GiB)")
                continue
            if free_host and entry["state_bytes"] > 0.9 * free_host:
                self.add("speed", name, "skipped",
                         f"momarun keeps a host copy of the training state ({gib:.0f} GiB); "
                         f"this machine has {free_host / 2**30:.0f} GiB available")
                continue
            if self.left() < 45:
                self.add("speed", name, "skipped", "the time budget was spent")
                continue
            big = entry["parameters"] > 1e9
            steps = 4 if big else (8 if entry["parameters"] > 1e8 else 12)
            corpus = self.corpus_for(entry, steps)
            out = os.path.join(self.work, "speed-" + entry["model"])
            shutil.rmtree(out, ignore_errors=True)
            code, output, seconds, rerun = self.run_step(
                [self.momarun, "train", os.path.join(self.payload, entry["artifact"]),
                 "--data", corpus, "--steps", steps, "--out", out,
                 "--checkpoint-every", 1000000], timeout=min(240, self.left()))
            if code != 0:
                self.add("speed", name, "FAIL", last_line(output) + (f"; {rerun}" if rerun else ""))
                continue
            with open(os.path.join(out, "metrics.jsonl")) as f:
                rates = [json.loads(line)["tokens_per_s"] for line in f if line.strip()]
            ours = statistics.median(rates[1:] or rates)
            flops = entry["train_flops_per_token"]
            fraction = (f"{ours * flops / peak[entry['precision']]:.1%} of the dense "
                        f"{entry['precision']} peak" if peak else "no peak known for this device")
            data = {"momarun_tokens_per_s": ours, "train_flops_per_token": flops,
                    "peak_fraction": ours * flops / peak[entry["precision"]] if peak else None}
            theirs = {}
            if torch_python:
                device = "cpu" if self.emulated else "cuda"
                modes = [("eager", [])] + ([] if self.emulated else [("compile", ["--compile"])])
                for mode, flag in modes:
                    if self.left() < 30:
                        theirs[mode] = "time budget spent"
                        continue
                    autocast = ["--autocast"] if entry["precision"] == "bf16" else []
                    code, output, _ = self.run(
                        [torch_python, os.path.join(HERE, "eager_speed.py"), "--config",
                         os.path.join(self.payload, entry["description"]), "--steps",
                         min(steps, 6), "--device", device, *autocast, *flag],
                        timeout=min(240 if mode == "compile" else 150, self.left()))
                    try:
                        theirs[mode] = json.loads(output.strip().splitlines()[-1])["tokens_per_s"]
                    except (ValueError, IndexError, KeyError):
                        theirs[mode] = "failed: " + last_line(output)[:120]
            if self.emulated:
                theirs.setdefault("compile", "torch.compile needs PyTorch 2 and a GPU here")
            data.update({f"torch_{k}_tokens_per_s": v for k, v in theirs.items()})
            versus = "; ".join(
                f"PyTorch {'autocast ' if entry['precision'] == 'bf16' else ''}{mode} "
                + (f"{v:,.0f} tok/s, ratio {ours / v:.2f}" if isinstance(v, float) else str(v))
                for mode, v in theirs.items()) or "no PyTorch on this machine"
            self.add("speed", name, "info", f"momarun {ours:,.0f} tok/s, {fraction}; {versus}",
                     **data)

    def check_cublas(self):
        binary = os.path.join(self.dir, "bin", "momac-bench-cublas")
        if self.emulated or not os.path.exists(binary):
            self.add("cublas", "cuBLAS against cuBLASLt", "skipped",
                     "needs a GPU" if self.emulated else "not in the bundle")
            return
        code, output, seconds, rerun = self.run_step([binary, "20"], timeout=min(180, self.left()))
        table = "\n".join(l for l in output.splitlines() if l.startswith("|"))
        header = next((l for l in output.splitlines() if "repeats per shape" in l), "")
        self.add("cublas", "cuBLAS against cuBLASLt", "info" if code == 0 else "FAIL",
                 f"{header}; {seconds:.0f} s" if code == 0 else last_line(output),
                 table=table)

    def run_all(self):
        for name in SECTIONS:
            self.section(name, getattr(self, "check_" + name))
        shutil.rmtree(self.work, ignore_errors=True)
        failed = sum(r["result"] == "FAIL" for rows in self.sections.values() for r in rows)
        print(f"gpu-report: {os.path.join(self.out, 'gpu-report.md')}: "
              f"{'all checks passed' if not failed else f'{failed} check(s) failed'} "
              f"in {time.time() - self.started:.0f} s", flush=True)
        return 1 if failed else 0


def last_line(output):
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    return lines[-1][:400] if lines else "(no output)"


def last_error(output):
    errors = [l.strip() for l in output.splitlines() if "error" in l.lower()]
    return (errors[-1] if errors else last_line(output))[:400]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "?"


def host_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--emulated", action="store_true")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds after which no new check starts "
                             "(default 330 on a GPU, 900 emulated)")
    args = parser.parse_args()
    with open(os.path.join(args.bundle, "bundle.json")) as f:
        target = json.load(f)["target"]
    if args.emulated != (target == "cuda-emulated"):
        print(f"gpu-report: this bundle holds {target} artifacts: run "
              f"{'run.sh --emulated' if target == 'cuda-emulated' else 'run.sh on a GPU machine'} "
              "(scripts/gpu-bundle.sh [--emulated] builds the other kind)")
        return 2
    budget = args.budget or (900 if args.emulated else 330)
    return Checks(os.path.abspath(args.bundle), os.path.abspath(args.out),
                  args.emulated, budget).run_all()


if __name__ == "__main__":
    sys.exit(main())
