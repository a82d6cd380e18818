# shellcheck shell=bash
# Shared helpers for the ci/*.sh scripts. Source it; it sets nothing but variables and functions.

# Repository root: the parent of this file's directory.
CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CI_DIR/.." && pwd)"
export REPO_ROOT

# Cache for the test images, shared by ci/test-images.sh and tests/images.py.
# The env vars name the uncompressed tars; debian's .gz and .zst lie beside it ("$tar.gz").
PYRUN_TEST_CACHE="${PYRUN_TEST_CACHE:-/var/cache/pyrun-test}"
PYRUN_TEST_BUSYBOX_TAR="${PYRUN_TEST_BUSYBOX_TAR:-$PYRUN_TEST_CACHE/busybox.tar}"
PYRUN_TEST_DEBIAN_TAR="${PYRUN_TEST_DEBIAN_TAR:-$PYRUN_TEST_CACHE/debian.tar}"
export PYRUN_TEST_CACHE PYRUN_TEST_BUSYBOX_TAR PYRUN_TEST_DEBIAN_TAR

export DEBIAN_FRONTEND=noninteractive

ci_log() { printf '==> %s\n' "$*" >&2; }
ci_warn() { printf 'ci: warning: %s\n' "$*" >&2; }
ci_die() { printf 'ci: error: %s\n' "$*" >&2; exit 1; }

ci_now() { date +%s.%N; }
# ci_since START -> seconds since START with one decimal
ci_since() { awk -v s="$1" -v e="$(ci_now)" 'BEGIN { printf "%.1f", e - s }'; }

# Put a Rust toolchain on PATH: rustup's ~/.cargo/bin first when it exists.
ci_rust_path() {
    local cargo_home="${CARGO_HOME:-$HOME/.cargo}"
    if [[ -x "$cargo_home/bin/cargo" ]]; then
        case ":$PATH:" in
            *":$cargo_home/bin:"*) ;;
            *) PATH="$cargo_home/bin:$PATH" ;;
        esac
        export PATH
    fi
}

# The project's virtualenv and the environment that keeps cargo's cache warm: maturin sets
# PYO3_PYTHON to the venv interpreter, so cargo test/clippy must see the same value or pyo3's
# build script reruns and everything above it is rebuilt.
VENV="$REPO_ROOT/.venv"
ci_venv_env() {
    export VIRTUAL_ENV="$VENV"
    export PYO3_PYTHON="$VENV/bin/python"
    case ":$PATH:" in
        *":$VENV/bin:"*) ;;
        *) PATH="$VENV/bin:$PATH" ;;
    esac
    export PATH
    unset PYTHONHOME
}
