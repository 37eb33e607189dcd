"""The tiny 4t4i example learns: trained on the synthetic mixed-modal corpus
for 150 steps (about a minute on 2 cores), its loss at least halves and both
the text and the image loss fall.

Run: /usr/bin/python3 -m unittest discover -s test/e2e -p 'test_learning.py'
"""
import json
import os
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("MOMAC_BUILD_DIR", os.path.join(ROOT, "build"))
MOMAC = os.path.join(BUILD, "bin", "momac")
MOMARUN = os.path.join(BUILD, "bin", "momarun")
MODEL = os.path.join(ROOT, "examples", "models", "tiny", "moe_4t4i.json")
STEPS = 150


class TinyExampleLearns(unittest.TestCase):
    def test_loss_halves_and_both_modalities_improve(self):
        with tempfile.TemporaryDirectory() as tmp:
            artifact = os.path.join(tmp, "artifact")
            subprocess.run([MOMAC, MODEL, "-o", artifact], check=True,
                           capture_output=True)
            data = os.path.join(tmp, "corpus")
            subprocess.run([MOMARUN, "corpus", MODEL, "--out", data,
                            "--synthetic", "2000"], check=True,
                           capture_output=True)
            run_dir = os.path.join(tmp, "run")
            start = time.time()
            subprocess.run([MOMARUN, "train", artifact, "--data", data,
                            "--steps", str(STEPS), "--out", run_dir],
                           check=True, capture_output=True)
            seconds = time.time() - start
            with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                metrics = [json.loads(line) for line in f]
        self.assertEqual(len(metrics), STEPS)
        self.assertLess(seconds, 120, "training took too long")

        def mean(key, window):
            return sum(m[key] for m in window) / len(window)
        first, last = metrics[:5], metrics[-10:]
        for key in ["loss", "loss.text", "loss.image"]:
            print(f"{key}: {mean(key, first):.3f} -> {mean(key, last):.3f}")
        self.assertLessEqual(mean("loss", last), 0.5 * mean("loss", first))
        self.assertLess(mean("loss.text", last), 0.7 * mean("loss.text", first))
        self.assertLess(mean("loss.image", last), 0.9 * mean("loss.image", first))


if __name__ == "__main__":
    unittest.main()
