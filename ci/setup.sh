#!/usr/bin/env bash
# Prepare a checkout for testing: system packages (ci/install-deps.sh), the virtualenv .venv with
# maturin and the `test` extras, and the Rust extension built in release mode into python/pyrun.
# Idempotent; a rerun with nothing changed takes a few seconds (cargo's cache lives in target/).
#
# The first run (or a change to pyproject.toml, Cargo.lock or the interpreter) does a full
# `maturin develop --release --extras test`: pip installs the extras and an editable pyrun. Later
# runs only rebuild the extension in place (`maturin develop --release --skip-install`), and only
# when a file under rust/ (or Cargo.*, pyproject.toml) is newer than python/pyrun/_core*.so.
#
# Environment: PYRUN_CI_SKIP_DEPS=1 skips ci/install-deps.sh (e.g. when not root);
# PYRUN_CI_FORCE_BUILD=1 runs maturin even when the extension looks up to date.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

setup_start="$(ci_now)"
LOGDIR="$REPO_ROOT/target/ci-logs"
mkdir -p "$LOGDIR"

# quietly LOGNAME CMD...: run CMD with its output in target/ci-logs/LOGNAME.log, shown on failure.
quietly() {
    local log="$LOGDIR/$1.log" rc=0
    shift
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc)); then
        cat "$log" >&2
        ci_die "failed (exit $rc): $*  [log: ${log#"$REPO_ROOT"/}]"
    fi
}

# --- system packages --------------------------------------------------------------------------
if [[ "${PYRUN_CI_SKIP_DEPS:-0}" != 1 ]]; then
    bash "$CI_DIR/install-deps.sh"
fi
ci_rust_path
command -v cargo >/dev/null || ci_die "cargo not found (run ci/install-deps.sh as root)"

# --- the virtualenv -----------------------------------------------------------------------------
# The interpreter's real path, so the venv does not go through a pyenv shim (~100 ms a start).
find_python() {
    local cand
    for cand in python3.11 python3 /usr/bin/python3.11 /usr/bin/python3; do
        command -v "$cand" >/dev/null 2>&1 || continue
        "$cand" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
            2>/dev/null || continue
        "$cand" -c 'import os, sys; print(os.path.realpath(sys.executable))'
        return
    done
    ci_die "no Python >= 3.11 with venv and ensurepip (run ci/install-deps.sh)"
}

if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py="$(find_python)"
    ci_log "creating .venv with $py ($("$py" -V 2>&1))"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    quietly pip-upgrade "$VENV/bin/python" -m pip install -q --upgrade pip
fi
ci_venv_env

if ! "$VENV/bin/maturin" --version >/dev/null 2>&1; then
    ci_log "installing maturin"
    quietly pip-maturin "$VENV/bin/pip" install -q 'maturin>=1.9,<2'
fi

# --- the extension ------------------------------------------------------------------------------
stamp_file="$VENV/.pyrun-ci-setup"
stamp="$(cat pyproject.toml Cargo.lock 2>/dev/null | sha256sum | cut -d' ' -f1)"
stamp+=" $("$VENV/bin/python" -V 2>&1) $(rustc -V 2>&1)"
installed_here() {
    # pyrun imports from this checkout's python/ (the editable install maturin made).
    (cd / && "$VENV/bin/python" -c '
import importlib.util, sys
spec = importlib.util.find_spec("pyrun")
sys.exit(spec is None or not spec.origin or not spec.origin.startswith(sys.argv[1]))
' "$REPO_ROOT/python/") 2>/dev/null
}

# Whether the in-place extension is older than anything that goes into it. Skipping maturin when
# it is not matters: maturin builds the crate's cdylib with the extension-module feature and
# `cargo test` without it, and cargo keeps one fingerprint for a cdylib, so each would rebuild
# pyrun-core after the other on every run.
extension_stale() {
    local so
    so="$(find python/pyrun -maxdepth 1 -name '_core*.so' -print -quit)"
    [[ -n "$so" ]] || return 0
    [[ -n "$(find rust Cargo.toml Cargo.lock pyproject.toml build.rs .cargo -newer "$so" \
        -print -quit 2>/dev/null)" ]]
}

# --- the executables ------------------------------------------------------------------------
# pyrun-runtime (the per-container monitor and runc's command line), installed next to the
# package where pyrun looks for it first (python/pyrun/_bin/, ignored by git), and pyrun (the
# command: a run-template replay, else the Python CLI `pyrun-py`), into the wheel data that
# maturin installs. cargo rebuilds only what changed; copies are replaced atomically so a
# running monitor keeps its image. Built before the extension: the wheel data must exist.
bin_start="$(ci_now)"
quietly cargo-bin cargo build --release --locked --bin pyrun-runtime --bin pyrun
mkdir -p python/pyrun/_bin target/wheel-data/scripts
if ! cmp -s target/release/pyrun-runtime python/pyrun/_bin/pyrun-runtime; then
    cp target/release/pyrun-runtime python/pyrun/_bin/.pyrun-runtime.tmp
    mv -f python/pyrun/_bin/.pyrun-runtime.tmp python/pyrun/_bin/pyrun-runtime
fi
cp target/release/pyrun target/wheel-data/scripts/pyrun
ci_log "pyrun-runtime and pyrun built ($(ci_since "$bin_start") s)"

build_start="$(ci_now)"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] && installed_here; then
    if [[ "${PYRUN_CI_FORCE_BUILD:-0}" != 1 ]] && ! extension_stale; then
        ci_log "extension up to date (python/pyrun/_core*.so newer than rust/, Cargo.*)"
    else
        ci_log "building the extension (maturin develop --release --skip-install)"
        quietly maturin "$VENV/bin/maturin" develop --release --skip-install
    fi
else
    ci_log "building and installing pyrun with the test extras (maturin develop --release -E test)"
    rm -f "$stamp_file"
    quietly maturin "$VENV/bin/maturin" develop --release --extras test
    installed_here || ci_die "pyrun is not importable from $REPO_ROOT/python after maturin develop"
    printf '%s\n' "$stamp" >"$stamp_file"
fi
ci_log "extension built ($(ci_since "$build_start") s)"

# The native `pyrun` (rust/bin/pyrun.rs) is the command itself: maturin installs it from the
# wheel data (target/wheel-data/scripts/), and it is replaced here after an extension-only build.
install_exe() {  # install_exe SRC DEST: an atomic copy, only when it changed
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$(dirname "$2")/.$(basename "$2").tmp"
        mv -f "$(dirname "$2")/.$(basename "$2").tmp" "$2"
    fi
}
install_exe target/wheel-data/scripts/pyrun "$VENV/bin/pyrun"
ci_log "setup done ($(ci_since "$setup_start") s)"
