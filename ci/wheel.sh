#!/usr/bin/env bash
# ci/wheel.sh [OUTDIR]: a wheel of pyrun that carries every native part — the extension
# (pyrun/_core.abi3.so), the pyrun-runtime executable (pyrun/_bin/pyrun-runtime, the
# per-container monitor and runc's command line) and the `pyrun` command (the wheel's data
# scripts: it replays run templates and hands the rest to the Python CLI, `pyrun-py`) — into
# OUTDIR (default dist/). ci/setup.sh first (venv, maturin, the executables), then `maturin build
# --release`, which picks them up through pyproject.toml's [tool.maturin] include and data;
# the result is checked to hold them, executable.
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
    scripts = [n for n in z.namelist() if n.endswith(".data/scripts/pyrun")]
    if not scripts:
        sys.exit(f"{sys.argv[1]}: no data script pyrun (the native command)")
    for name in ["pyrun/_bin/pyrun-runtime", *scripts]:
        mode = z.getinfo(name).external_attr >> 16
        if not mode & stat.S_IXUSR:
            sys.exit(f"{sys.argv[1]}: {name} is not executable")
    z.getinfo("pyrun/_core.abi3.so")
PY
ci_log "wheel: $wheel (extension + pyrun-runtime + the pyrun command)"
