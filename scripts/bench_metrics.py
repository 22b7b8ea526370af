"""The NumPy/SciPy baseline of `cocoflow bench-metrics`: masked PSNR + SSIM of a batch.

    python scripts/bench_metrics.py --source a.npy --edited b.npy --keep k.npy [--repeat 3]

Reads (B, C, H, W) images and a (B, 1, H, W) keep mask (any float dtype; converted to float64
before timing), times `reference.batch_metrics` (torch/tests/golden/metrics/reference.py: one
`scipy.ndimage.correlate1d` call per field and axis over the whole batch, float64) and prints
one JSON object: {"seconds": best of --repeat, "mse": [...], "ssim": [...], "numpy": version,
"scipy": version}. NaN (an empty keep mask) is written as null.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import scipy

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tasks" / "tests" / "golden" / "metrics"))
import reference  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True)
    p.add_argument("--edited", required=True)
    p.add_argument("--keep", required=True)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    a = np.load(args.source).astype(np.float64)
    b = np.load(args.edited).astype(np.float64)
    k = (np.load(args.keep).astype(np.float64) >= 0.5).astype(np.float64)
    best = float("inf")
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        mse, ssim = reference.batch_metrics(a, b, k)
        best = min(best, time.perf_counter() - t0)
    clean = lambda xs: [None if np.isnan(x) else float(x) for x in xs]  # noqa: E731
    print(json.dumps({"seconds": best, "mse": clean(mse), "ssim": clean(ssim),
                      "numpy": np.__version__, "scipy": scipy.__version__}))


if __name__ == "__main__":
    main()
