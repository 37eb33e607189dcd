"""The tree's shape, as the architecture issue set it (ctest `structure`):

- no function in runtime/ or tools/ longer than 150 lines;
- no file in compiler/Conversion longer than 600 lines;
- tools/momarun/momarun.cpp a dispatcher of at most 400 lines;
- nothing under runtime/ outside runtime/device/cuda includes a CUDA header
  (CUDA's own or device/cuda's) or tests a target name: the device seam
  (runtime/device/Device.h) decides.

Function lengths come from a small scanner of C++ bodies (a brace at the
end of a line that is not a class, namespace, struct, enum or initializer
list, up to its match); clang-tidy's readability-function-size agrees on
this tree, but takes minutes.
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAX_FUNCTION = 150
MAX_CONVERSION_FILE = 600
MAX_MOMARUN = 400

NOT_A_FUNCTION = re.compile(
    r"^\s*(template\s*<.*>\s*)?(class|struct|union|enum|namespace|extern\s+\"C\")\b"
    r"|=\s*\{\s*$|\b(do|else|try)\s*\{\s*$|^\s*\{\s*$|\)\s*(const\s*)?->\s*.*\{\s*$")


def strip(line):
    """A line without its comment and string contents."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])*'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    """(name line, first line, length) of each function body at namespace or
    class level."""
    with open(path, errors="replace") as f:
        lines = [strip(l) for l in f]
    found, depth, stack = [], 0, []
    for number, line in enumerate(lines, 1):
        opened, closed = line.count("{"), line.count("}")
        if opened > closed and line.rstrip().endswith("{"):
            # A body starts where a signature ends: ')' (perhaps with
            # qualifiers) or a constructor's initializer list.
            header = line
            if not NOT_A_FUNCTION.search(line) and re.search(
                    r"\)\s*(const|override|final|noexcept|\s)*\{\s*$|^\s*:\s*\w.*\{\s*$|\)\s*\{\s*$",
                    header) and not re.match(r"\s*(if|for|while|switch|catch)\b", line) \
                    and not any(s[1] for s in stack):
                stack.append((number, True, depth))
            else:
                stack.append((number, False, depth))
        depth += opened - closed
        while stack and depth <= stack[-1][2]:
            start, is_function, _ = stack.pop()
            if is_function:
                found.append((lines[start - 1].strip()[:80], start, number - start + 1))
    return found


def sources(*tops):
    for top in tops:
        for directory, _, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                if name.endswith((".cpp", ".h", ".cu")):
                    yield os.path.join(directory, name)


def main():
    problems = []
    for path in sources("runtime", "tools"):
        for header, start, length in functions(path):
            if length > MAX_FUNCTION:
                problems.append(f"{os.path.relpath(path, ROOT)}:{start}: a function of "
                                f"{length} lines (at most {MAX_FUNCTION}): {header}")
    for path in sources("compiler/Conversion"):
        with open(path) as f:
            count = sum(1 for _ in f)
        if count > MAX_CONVERSION_FILE:
            problems.append(f"{os.path.relpath(path, ROOT)}: {count} lines "
                            f"(at most {MAX_CONVERSION_FILE} in compiler/Conversion)")
    momarun = os.path.join(ROOT, "tools", "momarun", "momarun.cpp")
    with open(momarun) as f:
        count = sum(1 for _ in f)
    if count > MAX_MOMARUN:
        problems.append(f"tools/momarun/momarun.cpp: {count} lines (a dispatcher: at most "
                        f"{MAX_MOMARUN})")
    cuda_include = re.compile(r'#include\s*[<"](cuda|cublas|nccl|cub/|runtime/device/cuda/)')
    target_test = re.compile(r'"(cuda|cuda-emulated|cpu)"')
    seam = os.path.join(ROOT, "runtime", "device", "cuda")
    for path in sources("runtime"):
        if path.startswith(seam + os.sep):
            continue
        with open(path) as f:
            for number, line in enumerate(f, 1):
                code = line.split("//", 1)[0]
                if cuda_include.search(code):
                    problems.append(f"{os.path.relpath(path, ROOT)}:{number}: includes a CUDA "
                                    "header outside runtime/device/cuda")
                if target_test.search(code):
                    problems.append(f"{os.path.relpath(path, ROOT)}:{number}: names a target "
                                    "outside runtime/device/cuda (the device seam decides)")
    for problem in problems:
        print(problem)
    print(f"structure: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
