"""`make gpu-check`: the tests marked `gpu` (tests/test_gpu.py), then the GPU benchmark
(benchmarks/gpu.py), into one JSON file. On a machine without CUDA it says so and exits 0.

It needs the library alone, never DVC or MLflow, so that it runs on a lent GPU machine that has
its own python3 with torch and no package registry: the few pure-Python packages such a machine
lacks (webdataset, braceexpand, pytorch-fid) travel as wheels in `.gpu-wheels/` (`make
gpu-wheels` downloads them here) and are installed with `pip install --no-index --no-deps`
into `.gpu-wheels/site` when they cannot be imported.

    python3 scripts/gpu_check.py [--out gpu_check.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alae.io import write_json  # noqa: E402   (the standard library only)

WHEELS = ROOT / ".gpu-wheels"
NEEDED = ("webdataset", "braceexpand", "pytorch_fid")


def ensure_packages() -> dict[str, str]:
    """Put the carried wheels on the path when a needed package is missing; the environment
    variables for child processes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return env
    site = WHEELS / "site"
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        sys.exit(f"error: {', '.join(missing)} not importable and no wheels in {WHEELS} "
                 "(run `make gpu-wheels` where a package registry is reachable)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                    "--no-deps", "--target", str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join((str(site), env["PYTHONPATH"]))
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "gpu_check.json"))
    parser.add_argument("--seconds", default="2", help="timed seconds per training row")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: needs a CUDA device (torch.cuda.is_available() is False here); "
              "nothing was run")
        return
    env = ensure_packages()
    start = time.perf_counter()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider",
                            "-q", "-rs", "tests/test_gpu.py"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    print(tests.stdout[-4000:], tests.stderr[-2000:], sep="\n", flush=True)
    test_seconds = time.perf_counter() - start
    bench_out = ROOT / ".gpu-check-bench.json"
    bench = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--out", str(bench_out),
                            "--seconds", args.seconds], cwd=ROOT, env=env, text=True)
    result = {"tests": {"returncode": tests.returncode,
                        "summary": (tests.stdout.strip().splitlines() or [""])[-1],
                        "seconds": round(test_seconds, 1)},
              "benchmark": (json.loads(bench_out.read_text()) if bench.returncode == 0
                            else {"returncode": bench.returncode})}
    write_json(args.out, result)
    print(f"gpu-check: tests {result['tests']['summary']}; benchmark "
          f"{'written' if bench.returncode == 0 else 'FAILED'}; -> {args.out} "
          f"({time.perf_counter() - start:.0f} s)")
    sys.exit(1 if tests.returncode or bench.returncode else 0)


if __name__ == "__main__":
    main()
