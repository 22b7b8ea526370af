#!/usr/bin/env bash
# Installs the headless browser that the UI tests drive over W3C WebDriver (tests/it/webdriver.rs):
# Debian's `chromium` and its matching `chromedriver` (package chromium-driver, same version).
#   apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver
# Fonts come with it: libfontconfig1 -> fontconfig-config depends on fonts-dejavu-core.
#
# Idempotent: when both `chromium` and `chromedriver` are on PATH it installs nothing and only
# prints their versions. Needs root (or sudo) and apt-get; exits 1 with a note when it cannot
# install, so callers that treat the browser as optional can go on (`bash scripts/browser.sh || ...`).
# Usage: bash scripts/browser.sh
set -euo pipefail

say() { printf '[browser] %s\n' "$*"; }

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "note: chromium/chromedriver missing and apt-get is unavailable; install Chromium and a"
        say "      matching chromedriver by hand (both on PATH) to run the browser tests"
        exit 1
    fi
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            say "note: chromium/chromedriver missing; installing them needs root (or passwordless sudo):"
            say "      apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
            exit 1
        fi
    fi
    log="${TMPDIR:-/tmp}/cocoflow-browser-apt.log"
    say "installing chromium + chromium-driver with apt-get (log: $log)"
    start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! { "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
        >"$log" 2>&1; then
        tail -n 20 "$log" >&2 || true
        say "note: apt-get failed (see $log); the browser tests need chromium and chromedriver"
        exit 1
    fi
    say "installed in $((SECONDS - start)) s"
    have || { say "note: apt-get succeeded but chromium/chromedriver are still not on PATH"; exit 1; }
fi

say "$(chromium --version 2>/dev/null || echo 'chromium: version unknown') ($(command -v chromium))"
say "$(chromedriver --version 2>/dev/null | cut -d' ' -f1-2 || echo 'chromedriver: version unknown') ($(command -v chromedriver))"
