#!/usr/bin/env python3
"""Write the anchors' workloads (anchors/gen.py) as cocoflow workflows.

usage: gen_cocoflow.py WORKLOAD N OUTDIR      (w1 fan-out/fan-in, w2 chain, w4 5x3 sweep)

W1 and W2 come from gen.py's own task lists: one `shell` task per anchor task, named the same,
depending on the same tasks, running the same `echo` — into its declared output file `o.txt`
(cocoflow keeps outputs in its store) instead of `out/...`. W4 is written the way a sweep is
written in cocoflow (after ../shared/bench/side-by-side/gen_cocoflow.py): the shared prefix
`p1 -> p2`, then a 5x3 `sweep` whose arms are a `loop` of 4 steps starting from `p2`; every
task appends a line to `$COUNTS/<p1|p2|arm>.log`, so executions are counted (the prefix runs
once: its instances have the same key in every arm).
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "anchors"))
import gen  # noqa: E402  (the anchors' generator, checked in unchanged)


def shell_task(name, cmd, inputs):
    s = f"  {name}:\n    kind: shell\n"
    if inputs:
        s += "    inputs: {" + ", ".join(f"{k}: {v}" for k, v in inputs.items()) + "}\n"
    return s + f"    params: {{cmd: '{cmd}', outputs: {{o: o.txt}}}}\n"


def from_task_list(wl, n):
    y = f"name: {wl}\ntasks:\n"
    for name, cmd, out, deps in gen.task_list(wl, n):
        cmd = re.sub(r"> " + re.escape(out) + r"\b", "> o.txt", cmd)
        assert "o.txt" in cmd, cmd
        if len(deps) == 1:
            inputs = {"d": f"{deps[0]}.o"}
        elif deps:
            inputs = {"d": "[" + ", ".join(f"{d}.o" for d in deps) + "]"}
        else:
            inputs = None
        y += shell_task(name, cmd, inputs)
    return y


def w4():
    c = os.environ.get("COUNTS", os.path.abspath("counts"))
    xs, ys, steps = gen.XS, gen.YS, gen.STEPS
    return f"""name: w4
sweep:
  matrix: {{x: {list(range(xs))}, y: {list(range(ys))}}}
params: {{x: 0, y: 0}}
tasks:
  p1:
    kind: shell
    params: {{cmd: 'echo p1 > o.txt && echo 1 >> {c}/p1.log', outputs: {{o: o.txt}}}}
  p2:
    kind: shell
    inputs: {{p: p1.o}}
    params: {{cmd: 'echo p2 > o.txt && echo 1 >> {c}/p2.log', outputs: {{o: o.txt}}}}
  arm:
    loop:
      iterations: {steps}
      carry:
        prev: {{init: p2.o, next: step.o}}
      tasks:
        step:
          kind: shell
          inputs: {{p: carry.prev}}
          params: {{cmd: 'echo ${{x}} ${{y}} ${{iter}} > o.txt && echo 1 >> {c}/arm.log', outputs: {{o: o.txt}}}}
"""


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("w1", "w2", "w4"):
        sys.exit(__doc__)
    wl, n, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(d, exist_ok=True)
    text = w4() if wl == "w4" else from_task_list(wl, n)
    with open(os.path.join(d, "wf.yaml"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
