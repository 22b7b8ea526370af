"""Time per RL iteration of workflows/cocoedit.yaml, split into rollout / reward / train / ema.

    python3 scripts/bench_rl.py [--cocoflow target/release/cocoflow] [--iterations 4] [--pretrain-steps 60]

Runs the workflow in a fresh temporary state directory with one CPU slot (so no two tasks
overlap and each duration is that task's alone), evaluations switched off, and a short
pretrain (the base's quality changes how many groups are banned, hence a little of the train
time; pass `--pretrain-steps 1200` for the real base). Prints the median seconds per kind over
the iterations and the iteration total, from `cocoflow status --json`.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cocoflow", default=str(ROOT / "target" / "release" / "cocoflow"))
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--pretrain-steps", type=int, default=60)
    p.add_argument("--params", help="a preset file passed on as --params")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.cocoflow, "run", str(ROOT / "workflows" / "cocoedit.yaml"), "-q",
               "--state-dir", tmp, "--cpus", "1",
               "--set", f"iterations={args.iterations}",
               "--set", f"eval_every={args.iterations + 1}",
               "--set", f"pretrain_steps={args.pretrain_steps}"]
        if args.params:
            cmd += ["--params", args.params]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"cocoflow run failed ({r.returncode}):\n{r.stderr}")
        st = subprocess.run([args.cocoflow, "status", "--json", "--state-dir", tmp],
                            capture_output=True, text=True, check=True)
    inst = json.loads(st.stdout)["instances"]
    per = {}
    for i in inst:
        name = i["name"]
        if not name.startswith("rl[") or i["state"] != "succeeded" or name.endswith(".eval"):
            continue
        it = int(name[3:name.index("]")])
        per.setdefault(it, {})[i["kind"]] = (i["finished_ms"] - i["started_ms"]) / 1000.0
    kinds = ["rollout", "reward", "nft-train", "ema"]
    print(f"RL iteration of workflows/cocoedit.yaml ({args.iterations} iterations, 1 CPU slot; "
          f"median seconds)")
    for k in kinds:
        xs = [d[k] for d in per.values() if k in d]
        print(f"  {k:10s} {statistics.median(xs):8.3f} s")
    totals = [sum(d.get(k, 0.0) for k in kinds) for d in per.values()]
    print(f"  {'iteration':10s} {statistics.median(totals):8.3f} s")
    print("PyTorch comparison: needs a GPU (not measured on this machine)")


if __name__ == "__main__":
    main()
