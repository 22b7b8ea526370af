#!/usr/bin/env bash
# Venvs for the side-by-side benchmark: Snakemake 9.27.1 and Luigi 3.8.1 from PyPI, each in
# its own venv under $WFBENCH (default ${TMPDIR:-/tmp}/wfbench), pinned as in the anchors'
# measurement (shared/bench/anchors/setup.sh). Idempotent: an existing venv with the right
# version is kept.
#
# usage: bench/setup.sh [ENGINE...]     (default: snakemake luigi)
# env:   WFBENCH, PY (default python3.11 if present, else python3)
set -eu
WF=${WFBENCH:-${TMPDIR:-/tmp}/wfbench}
PY=${PY:-$(command -v python3.11 || command -v python3)}
ENGINES=("$@"); [ ${#ENGINES[@]} -gt 0 ] || ENGINES=(snakemake luigi)
mkdir -p "$WF"
spec() { case $1 in snakemake) echo 'snakemake==9.27.1' ;; luigi) echo 'luigi==3.8.1' ;; *) echo "unknown engine $1" >&2; exit 2 ;; esac; }
for e in "${ENGINES[@]}"; do
  want=$(spec "$e"); v="$WF/venv-$e"
  if [ -x "$v/bin/python" ] && "$v/bin/python" -m pip show "${want%%==*}" 2>/dev/null | grep -qx "Version: ${want##*==}"; then
    echo "$e: $want already in $v"; continue
  fi
  rm -rf "$v"
  "$PY" -m venv "$v"
  "$v/bin/python" -m pip install -q --upgrade pip > /dev/null 2>&1 || true
  s=$(date +%s)
  "$v/bin/python" -m pip install -q --no-cache-dir "$want"
  echo "$e: installed $want into $v in $(( $(date +%s) - s )) s"
done
