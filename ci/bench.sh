#!/usr/bin/env bash
# The benchmark comparison in one command, from a fresh checkout, as root:
#
#   bash ci/bench.sh [compare.py ARGS...]      e.g. --quick, --only start,vm, --vm-accel tcg
#
# Sets everything up (ci/setup.sh: system packages, qemu among them; .venv with the `test` extras,
# matplotlib among them; the extension and pyrun-runtime), makes the test images
# (ci/test-images.sh all), then runs benches/compare.py, which measures pyrun against runc, crun,
# podman, docker, skopeo, umoci, buildah, GNU tar, openssl and a qemu VM, and writes
# benches/results/RESULTS.md, results.json, start-latency.png and pull-build.png. The first run
# also fetches Debian's cloud kernel for the VM (cached in $PYRUN_TEST_CACHE/vm). A peer that is
# missing or fails is a row that says "not available" and why. Docker's rows need its daemon.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

start="$(ci_now)"
bash "$CI_DIR/setup.sh"
bash "$CI_DIR/test-images.sh" all
ci_venv_env
rc=0
"$VENV/bin/python" benches/compare.py "$@" || rc=$?
ci_log "ci/bench.sh done in $(ci_since "$start") s (exit $rc)"
exit "$rc"
