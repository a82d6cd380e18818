"""The CLI's start-up path stays lean: the parser loads argparse and nothing heavy; the engine,
JSON, tar, hashing and typing are imported only by the commands that use them; a common `run`
line is read without argparse at all."""

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
    added = (
        loaded_after("import pyrun.cli.parser; pyrun.cli.parser.build_parser('images')") - baseline
    )
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


def test_run_line_skips_argparse() -> None:
    """argparse (with re, enum and gettext) costs more than the container: a common `run` line
    goes through cli/options.py instead."""
    code = "import pyrun.cli; pyrun.cli._parse(['run', '--rm', '--network', 'none', 'img', 'true'])"
    added = loaded_after(code) - loaded_after("pass")
    assert "pyrun.cli.containers" in added
    assert "argparse" not in added
