#!/usr/bin/env bash
# Sets up the project-local Python environment ./.venv that cocoflow builds and tests against:
#   - torch 2.11.0 (its libtorch is what tch/torch-sys link against, see .cargo/config.toml),
#   - numpy, scipy, scikit-image, pillow (reference values in tests), moto[server] (S3 test server),
#   - sam2 1.1.0 + torchvision 0.26.0 (tools/sam2_server.py, the reference segmentation server),
#   - transformers 5.25.0 with fastapi, uvicorn and openai for `transformers serve` (the judge
#     server of torch/tests/it/judge_real_server.rs, tools/tiny_qwen_vl.py).
# Also runs scripts/browser.sh (Debian's chromium + chromedriver for the WebDriver UI tests, via
# apt-get when missing); if it cannot install them it prints a note and setup goes on.
# Pinned in scripts/requirements.txt + scripts/requirements-sam2.txt (+ scripts/constraints.txt for
# transitive deps). sam2 is a source package: it is installed in a second pip run, without build
# isolation (its build imports torch: the venv's 2.11.0, not the newest) and without its CUDA
# extension (SAM2_BUILD_CUDA=0), under the same constraints, so torch stays at 2.11.0.
#
# Idempotent: a marker file named after a hash of the requirement files and the Python version
# makes a second run a no-op. Usage: bash scripts/setup.sh   (PYTHON=python3.12 to pick another)
# Needs Python >= 3.11, network access to PyPI for the first run, and about 5 GB of disk.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
python="${PYTHON:-python3}"
req="scripts/requirements.txt"
req_sam2="scripts/requirements-sam2.txt"
con="scripts/constraints.txt"

say() { printf '[setup] %s\n' "$*"; }

# The headless browser for the UI tests (tests/it/webdriver.rs), before the venv's early exit.
bash scripts/browser.sh ||
    say "note: no chromium/chromedriver: browser tests skip (fail with COCOFLOW_REQUIRE_BROWSER=1)"

# A venv whose interpreter no longer runs (moved, Python upgraded) is rebuilt from scratch.
if [[ -e "$venv" ]] && ! "$venv/bin/python" -c 'pass' >/dev/null 2>&1; then
    say "existing $venv is broken; removing it"
    rm -rf "$venv"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    command -v "$python" >/dev/null || { say "error: $python not found (set PYTHON=...)"; exit 1; }
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        say "error: need Python >= 3.11, $python is $("$python" -V 2>&1)"; exit 1; }
    say "creating $venv with $("$python" -V 2>&1) ($(command -v "$python"))"
    "$python" -m venv "$venv"
fi

pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
site="$venv/lib/python$pyver/site-packages"

# .venv/torch -> lib/pythonX.Y/site-packages/torch: a Python-version-independent path to libtorch
# for .cargo/config.toml (LIBTORCH and the $ORIGIN rpath). The link sits above torch/lib, so the
# libraries' own $ORIGIN/../../nvidia/... rpaths still resolve into site-packages.
ensure_link() {
    local want="lib/python$pyver/site-packages/torch"
    if [[ "$(readlink "$venv/torch" 2>/dev/null || true)" != "$want" ]]; then
        say "linking .venv/torch -> $want"
        ln -sfn "$want" "$venv/torch"
    fi
}

hash="$(cat "$req" "$req_sam2" "$con" <(echo "python $pyver") | sha256sum | cut -c1-16)"
marker="$venv/.cocoflow-setup-$hash"

if [[ -f "$marker" && -f "$site/torch/lib/libtorch_cpu.so" && -d "$site/sam2" ]]; then
    ensure_link
    say "up to date ($(basename "$marker")); nothing to do"
    exit 0
fi

say "installing $req into $venv (first run: ~2 min, ~5 GB; torch pulls the CUDA 13 nvidia-* wheels)"
start=$SECONDS
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off \
    -r "$req" -c "$con"
say "installing $req_sam2 (source build: SAM2_BUILD_CUDA=0, --no-build-isolation)"
SAM2_BUILD_CUDA=0 "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    --progress-bar off --no-build-isolation -r "$req_sam2" -c "$con"
say "pip finished in $((SECONDS - start)) s"

ensure_link
"$venv/bin/python" - <<'EOF'
import torch
v = torch.__version__
assert v.split("+")[0] == "2.11.0", f"tch 0.24.0 needs torch 2.11.0, got {v}"
print(f"[setup] torch {v} at {torch.__path__[0]}")
import torchvision, sam2.build_sam, sam2.sam2_image_predictor
print(f"[setup] torchvision {torchvision.__version__}, sam2 at {sam2.__path__[0]}")
import transformers
from transformers.utils.import_utils import is_serve_available
assert is_serve_available(), "transformers serve needs fastapi, uvicorn and openai"
print(f"[setup] transformers {transformers.__version__} (`transformers serve` available)")
EOF

rm -f "$venv"/.cocoflow-setup-*
touch "$marker"
say "done: $(du -sh "$venv" | cut -f1) in .venv; marker $(basename "$marker")"
say "now: cargo build / cargo test (libtorch is found via .cargo/config.toml)"
