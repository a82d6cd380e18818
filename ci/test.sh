#!/usr/bin/env bash
# The CI test command: ci/test.sh [PYTEST ARGS...]
#
# Runs ci/setup.sh (system packages, .venv, the extension), then the checks in order:
# cargo fmt, cargo clippy, cargo test --release, ruff check, ruff format, mypy, the test images
# (ci/test-images.sh), pytest. Every check runs even when an earlier one failed (pytest is skipped
# when setup failed), and a summary with timings ends the output; the exit status is non-zero when
# any failed (CI_FAIL_FAST=1 stops at the first failure). Arguments go to pytest; pytest collecting
# no tests (exit 5) is a failure. cargo and maturin share target/.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

total_start="$(ci_now)"
summary=()
failed=0

# step NAME CMD...: run a check, record its status and time.
step() {
    local name="$1" start rc=0
    shift
    printf '\n==> %s: %s\n' "$name" "$*" >&2
    start="$(ci_now)"
    "$@" || rc=$?
    local took
    took="$(ci_since "$start")"
    if ((rc)); then
        failed=1
        summary+=("$(printf 'FAIL  %-14s %7s s  (exit %d)' "$name" "$took" "$rc")")
        printf '==> %s FAILED (exit %d, %s s)\n' "$name" "$rc" "$took" >&2
        if [[ "${CI_FAIL_FAST:-0}" == 1 ]]; then
            print_summary
            exit "$rc"
        fi
    else
        summary+=("$(printf 'ok    %-14s %7s s' "$name" "$took")")
    fi
}

print_summary() {
    printf '\n==> summary (%s s in all)\n' "$(ci_since "$total_start")" >&2
    printf '    %s\n' "${summary[@]}" >&2
}

# shellcheck disable=SC2317  # called through step
run_pytest() {
    local rc=0
    "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || rc=$?
    if ((rc == 5)); then
        echo "pytest collected no tests (exit 5): counted as a failure" >&2
    fi
    return "$rc"
}

# Python sources that exist (benches/ may not yet).
py_paths=()
for d in python tests benches; do
    [[ -d "$d" ]] && py_paths+=("$d")
done

step "setup" bash "$CI_DIR/setup.sh"
setup_ok=$((!failed))
ci_rust_path
ci_venv_env

step "cargo fmt" cargo fmt --all --check
step "cargo clippy" cargo clippy --locked --all-targets --all-features -- -D warnings
step "cargo test" cargo test --locked --release
step "ruff check" "$VENV/bin/ruff" check "${py_paths[@]}"
step "ruff format" "$VENV/bin/ruff" format --check "${py_paths[@]}"
step "mypy" "$VENV/bin/mypy"
step "test images" bash "$CI_DIR/test-images.sh" all
if ((setup_ok)); then
    step "pytest" run_pytest "$@"
else
    summary+=("$(printf 'SKIP  %-14s            (setup failed)' pytest)")
fi

print_summary
exit "$failed"
