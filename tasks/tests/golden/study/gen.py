"""Writes `stats.json` here: a small human-preference ranking study (paper appendix C.2) and
its statistics, computed from the textbook definitions with numpy, independently of the Rust
code, for `tasks/src/study/stats.rs` (test `golden_study_matches_the_python_reference`, which
compares with an absolute tolerance of 1e-12).

Run from the repository root (numpy only; the project venv has it):
    .venv/bin/python tasks/tests/golden/study/gen.py
The output is checked in, so the tests need neither. Rerunning leaves `git status` clean (the
answers come from a fixed 64-bit LCG, not from Python's `random`).

The study: methods flux-kontext, edit-r1, cocoedit (deliberately not in name order); criteria
success, consistency; samples s01..s06 (edit types replace/remove alternating), s01..s03 with
three annotators, s04..s06 with two, s07 with one (no agreement for it). Raw ranks are drawn in
1..3 per method independently, so ties and unnormalised answers like {1, 1, 2} occur. Pinned
cases: s01/success all three annotators give the same strict order (W = 1); s04/success two
opposite strict orders (W = 0); s06/consistency both annotators tie everything (W undefined:
null); one answer written as {2, 2, 3}; one answer also ranks an unlisted method (dropped
before the mid-ranks); one answer lacks a method (invalid: `skipped`); one answer is of an
unlisted criterion (`unlisted_criterion`).

Definitions (lower rank = better):
- mid-rank of value v in an answer x: #{x < v} + (#{x = v} + 1) / 2, over the listed methods;
- mean rank: the arithmetic mean of a method's mid-ranks over the valid answers;
- win rate of (a, b): (#{a < b} + #{a = b} / 2) / #answers;
- Kendall's W per (sample, criterion) with m >= 2 raters of n objects:
  W = 12 S / (m^2 (n^3 - n) - m sum_i T_i), S = sum_j (R_j - m (n + 1) / 2)^2, R_j the column
  sums of the mid-rank matrix, T_i = sum over rater i's tie groups of (t^3 - t); null when the
  denominator is 0; the criterion's W is the mean over the samples where it is defined;
- pairwise agreement: over every pair of raters of a sample and every unordered pair of
  methods, whether sign(r_a - r_b) is the same for both raters; pooled share over samples.
"""
import json
import pathlib

import numpy as np

root = pathlib.Path(__file__).resolve().parent
METHODS = ["flux-kontext", "edit-r1", "cocoedit"]
CRITERIA = ["success", "consistency"]


class Lcg:
    """Knuth's MMIX LCG; the high 32 bits."""

    def __init__(self, seed):
        self.x = seed

    def next(self):
        self.x = (6364136223846793005 * self.x + 1442695040888963407) % (1 << 64)
        return self.x >> 32


def build_answers():
    rng = Lcg(2024)
    answers = []
    for s in range(1, 8):
        sample = f"s{s:02d}"
        edit_type = "replace" if s % 2 == 1 else "remove"
        annotators = ["ann-a", "ann-b", "ann-c"] if s <= 3 else ["ann-a", "ann-b"]
        if s == 7:
            annotators = ["ann-c"]
        for ann in annotators:
            for crit in CRITERIA:
                ranks = {m: float(1 + rng.next() % 3) for m in METHODS}
                answers.append(
                    {
                        "annotator": ann,
                        "sample": sample,
                        "edit_type": edit_type,
                        "criterion": crit,
                        "ranks": ranks,
                    }
                )

    def find(sample, ann, crit):
        return next(
            a
            for a in answers
            if a["sample"] == sample and a["annotator"] == ann and a["criterion"] == crit
        )

    for ann in ["ann-a", "ann-b", "ann-c"]:
        find("s01", ann, "success")["ranks"] = {"flux-kontext": 3.0, "edit-r1": 2.0, "cocoedit": 1.0}
    find("s04", "ann-a", "success")["ranks"] = {"flux-kontext": 1.0, "edit-r1": 2.0, "cocoedit": 3.0}
    find("s04", "ann-b", "success")["ranks"] = {"flux-kontext": 3.0, "edit-r1": 2.0, "cocoedit": 1.0}
    for ann in ["ann-a", "ann-b"]:
        find("s06", ann, "consistency")["ranks"] = {m: 1.0 for m in METHODS}
    find("s02", "ann-b", "consistency")["ranks"] = {"flux-kontext": 2.0, "edit-r1": 2.0, "cocoedit": 3.0}
    find("s03", "ann-c", "consistency")["ranks"] = {
        "flux-kontext": 2.0,
        "edit-r1": 3.0,
        "cocoedit": 1.0,
        "gpt-image": 1.0,
    }
    answers.append(
        {
            "annotator": "ann-d",
            "sample": "s02",
            "edit_type": "remove",
            "criterion": "success",
            "ranks": {"flux-kontext": 1.0, "edit-r1": 2.0},
        }
    )
    answers.append(
        {
            "annotator": "ann-a",
            "sample": "s01",
            "edit_type": "replace",
            "criterion": "aesthetics",
            "ranks": {"flux-kontext": 1.0, "edit-r1": 2.0, "cocoedit": 3.0},
        }
    )
    return answers


def midranks(values):
    """Mid-ranks by counting: #{x < v} + (#{x = v} + 1) / 2."""
    x = np.asarray(values, dtype=float)
    less = (x[None, :] < x[:, None]).sum(axis=1)
    equal = (x[None, :] == x[:, None]).sum(axis=1)
    return less + (equal + 1) / 2.0


def kendall_w(matrix):
    """Tie-corrected Kendall's W of an m x n matrix of mid-ranks (rows: raters)."""
    m, n = matrix.shape
    col = matrix.sum(axis=0)
    s = float(((col - m * (n + 1) / 2.0) ** 2).sum())
    t = 0.0
    for row in matrix:
        _, counts = np.unique(row, return_counts=True)
        t += float((counts.astype(float) ** 3 - counts).sum())
    denom = m * m * (n**3 - n) - m * t
    return None if denom == 0 else 12.0 * s / denom


def main():
    answers = build_answers()
    mids_all = []
    for a in answers:
        names = sorted(a["ranks"])
        r = midranks([a["ranks"][k] for k in names])
        mids_all.append({k: float(v) for k, v in zip(names, r)})

    valid = {c: [] for c in CRITERIA}  # criterion -> [(sample, edit_type, mid-rank vector)]
    skipped = unlisted = 0
    for a in answers:
        if a["criterion"] not in CRITERIA:
            unlisted += 1
            continue
        if not all(m in a["ranks"] for m in METHODS):
            skipped += 1
            continue
        vec = midranks([a["ranks"][m] for m in METHODS])
        valid[a["criterion"]].append((a["sample"], a["edit_type"], vec))

    out_criteria = {}
    for c in CRITERIA:
        rows = valid[c]
        mat = np.array([r[2] for r in rows])
        mean = mat.mean(axis=0)
        wins = []
        for i, a in enumerate(METHODS):
            for j, b in enumerate(METHODS):
                if i == j:
                    continue
                w = int((mat[:, i] < mat[:, j]).sum())
                t = int((mat[:, i] == mat[:, j]).sum())
                l = int((mat[:, i] > mat[:, j]).sum())
                wins.append(
                    {
                        "method": a,
                        "opponent": b,
                        "rate": (w + 0.5 * t) / len(rows),
                        "wins": w,
                        "ties": t,
                        "losses": l,
                        "n": len(rows),
                    }
                )
        per_sample = {}
        ws = []
        agree_all = pairs_all = 0
        for sample in sorted({r[0] for r in rows}):
            sm = np.array([r[2] for r in rows if r[0] == sample])
            if sm.shape[0] < 2:
                continue
            w = kendall_w(sm)
            if w is not None:
                ws.append(w)
            agree = pairs = 0
            for p in range(sm.shape[0]):
                for q in range(p + 1, sm.shape[0]):
                    for i in range(len(METHODS)):
                        for j in range(i + 1, len(METHODS)):
                            pairs += 1
                            agree += int(
                                np.sign(sm[p, i] - sm[p, j]) == np.sign(sm[q, i] - sm[q, j])
                            )
            agree_all += agree
            pairs_all += pairs
            per_sample[sample] = {
                "raters": int(sm.shape[0]),
                "kendall_w": w,
                "pairwise": agree / pairs,
                "n_pairs": pairs,
            }
        out_criteria[c] = {
            "n": len(rows),
            "n_samples": len({r[0] for r in rows}),
            "mean_rank": {m: float(v) for m, v in zip(METHODS, mean)},
            "win_rates": wins,
            "agreement": {
                "kendall_w_mean": float(np.mean(ws)) if ws else None,
                "n_samples": len(ws),
                "pairwise": agree_all / pairs_all if pairs_all else None,
                "n_pairs": pairs_all,
                "per_sample": per_sample,
            },
        }

    per_type = {}
    types = sorted({r[1] for c in CRITERIA for r in valid[c]})
    for t in types:
        per_type[t] = {}
        for c in CRITERIA:
            sub = [r[2] for r in valid[c] if r[1] == t]
            per_type[t][c] = {
                "n": len(sub),
                "mean_rank": {
                    m: (float(v) if sub else None)
                    for m, v in zip(METHODS, np.array(sub).mean(axis=0) if sub else [None] * 3)
                },
            }

    golden = {
        "tolerance": 1e-12,
        "methods": METHODS,
        "criteria": CRITERIA,
        "answers": answers,
        "expected": {
            "mid_ranks": mids_all,
            "n_answers": sum(len(valid[c]) for c in CRITERIA),
            "skipped": skipped,
            "unlisted_criterion": unlisted,
            "criteria": out_criteria,
            "per_edit_type": per_type,
        },
    }
    (root / "stats.json").write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
