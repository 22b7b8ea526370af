#!/usr/bin/env bash
# cocoflow beside Snakemake 9.27.1 and Luigi 3.8.1 on the anchors' workloads, in one run:
# W1 fan-out/fan-in (N=1000), W2 chain (N=1000), W3 no-op re-run of W1, W4 5x3 sweep with a
# shared prefix (executions counted), W1 with N=1 (fixed cost). Same generator
# (bench/anchors/gen.py), same shell commands, 2 parallel slots, reps interleaved (rep 1 of
# every workload and engine, then rep 2, ...), each run in a fresh directory timed by GNU
# wall clock (a monotonic clock around the command; peak RSS from getrusage). Prints one TSV
# row per run, then medians and ratios.
#
# usage: bench/side_by_side.sh COCOFLOW_BIN [REPS]      (REPS default 3)
# needs: bench/setup.sh run first (venvs in $WFBENCH), python3.
# env:   WFBENCH (default ${TMPDIR:-/tmp}/wfbench), JOBS (default 2),
#        ENGINES (default "cocoflow luigi snakemake"),
#        WORKLOADS (default "w1:1000 w2:1000 w3:1000 w4:15 w1:1"),
#        SMK_RECURSION_LIMIT (default 20000: Snakemake builds W2's DAG recursively and fails
#        on a 1000-deep chain under Python's default limit; the anchors' workaround).
set -u
BIN=$(realpath "${1:?usage: side_by_side.sh COCOFLOW_BIN [REPS]}")
REPS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
GEN=$HERE/anchors/gen.py
WF=${WFBENCH:-${TMPDIR:-/tmp}/wfbench}
JOBS=${JOBS:-2}
ENGINES=${ENGINES:-cocoflow luigi snakemake}
WORKLOADS=${WORKLOADS:-w1:1000 w2:1000 w3:1000 w4:15 w1:1}
export WF_SMK_RECURSION_LIMIT=${SMK_RECURSION_LIMIT:-20000} WF_WORKERS=$JOBS
S=$WF/sbs-$$
OUT=$S/results.tsv
mkdir -p "$S"
for e in $ENGINES; do
  [ "$e" = cocoflow ] || [ -x "$WF/venv-$e/bin/python" ] || { echo "no venv for $e in $WF: run bench/setup.sh" >&2; exit 2; }
done

# Runs a command with its output in a log; prints "wall_s peak_rss_kb exit_code".
timed() {  # log cmd...
  python3 -c '
import resource, subprocess, sys, time
log = open(sys.argv[1], "w")
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
wall = time.perf_counter() - t
print(f"{wall:.4f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {rc}")' "$@"
}

# Prepares $d for one engine and workload; sets CMD.
prepare() {  # engine workload n dir
  local e=$1 wl=$2 n=$3 d=$4
  mkdir -p "$d/out/mid" "$d/counts"
  case $e in
    cocoflow)
      COUNTS=$d/counts python3 "$HERE/gen_cocoflow.py" "$wl" "$n" "$d" || exit 1
      CMD=("$BIN" run wf.yaml --quiet --cpus "$JOBS") ;;
    snakemake)
      python3 "$GEN" snakemake "$wl" "$n" "$d" || exit 1
      CMD=("$WF/venv-snakemake/bin/snakemake" --cores "$JOBS" --snakefile Snakefile) ;;
    luigi)
      python3 "$GEN" luigi "$wl" "$n" "$d" || exit 1
      CMD=(env PYTHONPATH=. "$WF/venv-luigi/bin/luigi" --module wf_luigi All --local-scheduler --workers "$JOBS") ;;
  esac
}

# Checks a finished run; prints "ok executions" (executions: W4's counted lines).
check() {  # engine workload n rc log
  local e=$1 wl=$2 n=$3 rc=$4 log=$5 ok=1
  [ "$rc" = 0 ] || ok=0
  if [ "$e" = cocoflow ]; then
    # The run's own record: every instance succeeded (W3: every one cached, none ran).
    "$BIN" status --json > status.json 2>/dev/null || ok=0
    python3 -c '
import json, sys
v = json.load(open("status.json"))
want = "cached" if sys.argv[1] == "w3" else "succeeded"
states = {i["state"] for i in v["instances"]}
sys.exit(0 if v["run"]["status"] == "succeeded" and states == {want} else 1)' "$wl" || ok=0
  else
    case $wl in
      w1|w3) [ -f out/sink.txt ] && [ "$(find out/mid -name '*.txt' | wc -l)" -eq "$n" ] || ok=0 ;;
      w2) [ "$(find out -maxdepth 1 -name 'c*.txt' | wc -l)" -eq "$n" ] || ok=0 ;;
      w4) [ "$(find out -name 'arm_*_s4.txt' | wc -l)" -eq 15 ] || ok=0 ;;
    esac
  fi
  local ex=-
  [ "$wl" = w4 ] && ex="p1=$(cat counts/p1.log 2>/dev/null | wc -l),p2=$(cat counts/p2.log 2>/dev/null | wc -l),arm=$(cat counts/arm.log 2>/dev/null | wc -l)"
  echo "$ok $ex"
}

run_one() {  # engine workload n rep
  local e=$1 wl=$2 n=$3 r=$4 d=$S/$1-$2-$3-r$4 gwl=$2
  [ "$wl" = w3 ] && gwl=w1
  prepare "$e" "$gwl" "$n" "$d"
  cd "$d" || exit 1
  if [ "$wl" = w3 ]; then "${CMD[@]}" > setup.log 2>&1; sleep 0.2; fi
  read -r wall rss rc < <(timed run.log "${CMD[@]}")
  read -r ok ex < <(check "$e" "$wl" "$n" "$rc" run.log)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$e" "$wl" "$n" "$r" "$wall" "$rss" "$rc" "$ok" "$ex" | tee -a "$OUT"
  cd "$S" || exit 1
  rm -rf "$d"
}

echo "# cocoflow side by side: $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -sr); $BIN; $JOBS slots; $REPS reps"
for e in $ENGINES; do
  case $e in
    cocoflow) echo "# cocoflow: $("$BIN" --version 2>/dev/null)" ;;
    snakemake) echo "# snakemake $("$WF/venv-snakemake/bin/snakemake" --version) (W2 with sys.setrecursionlimit($WF_SMK_RECURSION_LIMIT))" ;;
    luigi) echo "# luigi $("$WF/venv-luigi/bin/python" -c 'import importlib.metadata as m; print(m.version("luigi"))')" ;;
  esac
done
printf 'engine\tworkload\tn\trep\twall_s\tmaxrss_kb\trc\tok\texecutions\n' | tee "$OUT"
for r in $(seq 1 "$REPS"); do
  for w in $WORKLOADS; do
    for e in $ENGINES; do
      run_one "$e" "${w%%:*}" "${w##*:}" "$r"
    done
  done
done
python3 - "$OUT" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
engines = list(dict.fromkeys(r["engine"] for r in rows))
cases = list(dict.fromkeys((r["workload"], r["n"]) for r in rows))
def med(e, w, n, col="wall_s"):
    v = [float(r[col]) for r in rows if (r["engine"], r["workload"], r["n"]) == (e, w, n) and r["ok"] == "1"]
    bad = sum(1 for r in rows if (r["engine"], r["workload"], r["n"]) == (e, w, n) and r["ok"] != "1")
    return (statistics.median(v) if v else None), len(v), bad
print()
print("| workload | " + " | ".join(f"{e} s (median)" for e in engines) + " | " +
      " | ".join(f"{e} / cocoflow" for e in engines if e != "cocoflow") + " | peak RSS MB (" + ", ".join(engines) + ") |")
print("|---" * (1 + 2 * len(engines)) + "|")
names = {"w1": "W1 fan-out/in", "w2": "W2 chain", "w3": "W3 no-op re-run", "w4": "W4 5x3 sweep"}
for w, n in cases:
    meds = {e: med(e, w, n) for e in engines}
    cells = []
    for e in engines:
        m, k, bad = meds[e]
        cells.append("—" if m is None else f"{m:.3f}" + (f" ({k} ok, {bad} failed)" if bad else ""))
    c = meds.get("cocoflow", (None,))[0]
    ratios = []
    for e in engines:
        if e == "cocoflow":
            continue
        m = meds[e][0]
        ratios.append("—" if (m is None or not c) else f"{m / c:.1f}×")
    rss = []
    for e in engines:
        m = med(e, w, n, "maxrss_kb")[0]
        rss.append("—" if m is None else f"{m / 1024:.0f}")
    label = names.get(w, w) + (f" N={n}" if w != "w4" else "")
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " | " + ", ".join(rss) + " |")
ex = [r for r in rows if r["workload"] == "w4"]
if ex:
    print()
    for e in engines:
        seen = sorted({r["executions"] for r in ex if r["engine"] == e})
        print(f"W4 executions, {e}: {'; '.join(seen)} (62 tasks: p1=1, p2=1, arm=60 when the prefix runs once)")
PY
echo "# raw rows: $OUT"
