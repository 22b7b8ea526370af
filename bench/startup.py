#!/usr/bin/env python3
"""Start-up cost of the `cocoflow` front end: wall time and peak RSS of `kinds`, `status` and
`plan workflows/ablation.yaml`, median of N runs each (issue 13's goal: <= 30 ms, <= 40 MB).

    python3 bench/startup.py [--bin target/release/cocoflow] [--runs 10]

Peak RSS comes from GNU time (`/usr/bin/time -f %M`, the same figure as `time -v`'s "Maximum
resident set size"); wall time from this script's clock around the same call. `status` runs
in a scratch state directory holding one finished run of a one-task workflow. Also prints
whether the binary links libtorch (`ldd`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(argv, cwd, runs):
    walls, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(
            ["/usr/bin/time", "-f", "%M"] + argv,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        walls.append(time.perf_counter() - t0)
        if p.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {p.stderr}")
        rss.append(int(p.stderr.strip().splitlines()[-1]))
    return statistics.median(walls), max(rss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/cocoflow"))
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    exe = os.path.abspath(a.bin)
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    print(f"{exe}: links libtorch: {'yes' if 'libtorch' in ldd else 'no'}")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "w.yaml"), "w") as f:
            f.write("name: w\ntasks:\n  a:\n    kind: noop\n")
        subprocess.run([exe, "run", "w.yaml", "-q"], cwd=d, check=True)
        cases = [
            ("kinds", [exe, "kinds"]),
            ("status", [exe, "status"]),
            ("plan ablation.yaml", [exe, "plan", os.path.join(ROOT, "workflows/ablation.yaml")]),
        ]
        print(f"{'command':<22} {'median wall':>12} {'peak RSS':>10}   (runs: {a.runs})")
        for name, argv in cases:
            wall, rss = measure(argv, d, a.runs)
            print(f"{name:<22} {wall * 1000:>9.1f} ms {rss / 1024:>7.1f} MB")


if __name__ == "__main__":
    main()
