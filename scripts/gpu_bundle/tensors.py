"""Safetensors files and their comparison, for the GPU bundle: used here
(make_bundle.py, to record what the CPU computed) and on the GPU machine
(gpu_report.py, to compare with it). Standard library only, faster with
numpy where it is installed (the GPU machine's Python has it).

A gradient is compared tensor by tensor as max |gpu - cpu| / max |cpu|.
Gradients do not travel whole (tiny mod_moe_4t4i_aux alone has 19 MB of
them, small90 360 MB): the bundle keeps a summary of each tensor (its largest
magnitude, its L2 norm and its values at SAMPLES fixed positions, the largest
among them), which the GPU's whole tensor is held to.
"""
import array
import json
import math
import random
import struct

try:
    import numpy
except ImportError:  # the comparison works without it, slower
    numpy = None

SAMPLES = 64


def read(path):
    """{name: (shape, values)} of a safetensors file's F32 tensors; values an
    array of floats (numpy where available). Metadata is skipped."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        if numpy is not None:
            values = numpy.frombuffer(data[begin:end], dtype="<f4")
        else:
            values = array.array("f")
            values.frombytes(bytes(data[begin:end]))
        tensors[name] = (tuple(info["shape"]), values)
    return tensors


def largest(values):
    if numpy is not None:
        return float(numpy.abs(values).max()) if len(values) else 0.0
    return max((abs(v) for v in values), default=0.0)


def norm(values):
    if numpy is not None:
        return float(numpy.sqrt(numpy.dot(values.astype("f8"), values.astype("f8"))))
    return math.sqrt(math.fsum(v * v for v in values))


def argmax_abs(values):
    if numpy is not None:
        return int(numpy.abs(values).argmax()) if len(values) else 0
    return max(range(len(values)), key=lambda i: abs(values[i]), default=0)


def sample_positions(name, count):
    """SAMPLES positions of a tensor of `count` values, fixed by its name."""
    rng = random.Random(name)
    return sorted({rng.randrange(count) for _ in range(SAMPLES)}) if count else []


def summarize(tensors):
    """The summary the bundle keeps of a large gradient file."""
    summary = {}
    for name, (shape, values) in tensors.items():
        positions = sample_positions(name, len(values))
        top = argmax_abs(values)
        positions = sorted(set(positions) | ({top} if len(values) else set()))
        summary[name] = {"shape": list(shape), "max": largest(values),
                         "l2": norm(values),
                         "samples": [[i, float(values[i])] for i in positions]}
    return summary


def relative_error(actual, expected):
    """max |actual - expected| / max |expected| of a tensor (values or its
    summary)."""
    if isinstance(expected, dict):
        scale = max(expected["max"], 1e-30)
        worst = max((abs(float(actual[i]) - v) for i, v in expected["samples"]),
                    default=0.0)
        worst = max(worst, abs(largest(actual) - expected["max"]))
        # The norm is of the same scale as the largest entry or more: held
        # to the same relative bound of its own size.
        l2 = max(expected["l2"], 1e-30)
        return max(worst / scale, abs(norm(actual) - expected["l2"]) / l2)
    scale = max(largest(expected), 1e-30)
    if numpy is not None:
        return float(numpy.abs(actual - expected).max()) / scale if len(expected) else 0.0
    return max((abs(a - e) for a, e in zip(actual, expected)), default=0.0) / scale


def compare(actual_path, expected, tolerance):
    """Per tensor (relative error, tolerance, ok) of the gradient file at
    `actual_path` against `expected` (a file path or a summary), with
    `tolerance` a number or {name: number}. Missing tensors fail."""
    actual = read(actual_path)
    reference = read(expected) if isinstance(expected, str) else expected
    rows = {}
    for name, wanted in reference.items():
        bound = tolerance[name] if isinstance(tolerance, dict) else tolerance
        if name not in actual:
            rows[name] = (math.inf, bound, False)
            continue
        values = wanted[1] if isinstance(wanted, tuple) else wanted
        error = relative_error(actual[name][1], values)
        rows[name] = (error, bound, error <= bound)
    return rows
