"""The CLI's start-up path stays lean: `import pyrun.cli` loads argparse and nothing heavy; the
engine, JSON, tar, hashing and typing are imported only by the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = {
    "pyrun._core",
    "pyrun.client",
    "pyrun.store",
    "typing",
    "json",
    "tarfile",
    "hashlib",
    "dataclasses",
    "datetime",
}


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_cli_import_is_lean() -> None:
    baseline = loaded_after("pass")
    added = loaded_after("import pyrun.cli; pyrun.cli.build_parser('images')") - baseline
    assert not (added & (HEAVY - baseline)), sorted(added & HEAVY)


def test_version_loads_no_engine() -> None:
    code = "import sys; from pyrun.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    assert "pyrun._core" not in loaded_after(code)


def test_run_path_skips_dataclasses() -> None:
    """`pyrun run` imports the client, store and runtime: none of them may pull in dataclasses
    (it imports inspect, ~10 ms)."""
    baseline = loaded_after("pass")
    added = loaded_after("import pyrun.client, pyrun.runtime.containers") - baseline
    assert "dataclasses" not in added
