#!/usr/bin/env bash
# ci/wheel.sh [OUTDIR]: a wheel of pyrun that carries both native parts — the extension
# (pyrun/_core.abi3.so) and the pyrun-runtime executable (pyrun/_bin/pyrun-runtime, the
# per-container monitor) — into OUTDIR (default dist/). ci/setup.sh first (venv, maturin, the
# executable), then `maturin build --release`, which picks the executable up through
# pyproject.toml's [tool.maturin] include; the result is checked to hold it, executable.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

out="${1:-dist}"
bash ci/setup.sh
ci_log "maturin build --release -o $out"
"$VENV/bin/maturin" build --release --locked -q -o "$out"
wheel="$(ls -t "$out"/pyrun-*.whl | head -n1)"
"$VENV/bin/python" - "$wheel" <<'PY'
import stat, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    info = z.getinfo("pyrun/_bin/pyrun-runtime")
    mode = info.external_attr >> 16
    if not mode & stat.S_IXUSR:
        sys.exit(f"{sys.argv[1]}: pyrun/_bin/pyrun-runtime is not executable")
    z.getinfo("pyrun/_core.abi3.so")
PY
ci_log "wheel: $wheel (extension + pyrun-runtime)"
