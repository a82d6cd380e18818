"""The CLI end to end (subprocesses): Docker's commands, flags, output shapes and exit codes,
and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert res.returncode == code, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) >= 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def test_help_and_version(pyrun: PyrunRunner) -> None:
    res = pyrun("--help")
    assert res.returncode == 0 and "import" in res.stdout and "save" in res.stdout
    assert pyrun("--version").stdout.startswith("pyrun version ")


def test_usage_errors_exit_125(pyrun: PyrunRunner) -> None:
    one_line_error(pyrun("--bogus"), 125, "unrecognized arguments")
    one_line_error(pyrun("images", "--nope"), 125)
    one_line_error(pyrun("nosuchcommand"), 125, "invalid choice")


@needs_root
def test_import_list_inspect_history(pyrun: PyrunRunner, busybox_tar: Path) -> None:
    res = pyrun("import", "-c", 'CMD ["/bin/sh"]', "-m", "hello", str(busybox_tar), "busybox:test")
    assert res.returncode == 0, res.stderr
    image_id = res.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert pyrun("images", "-q").stdout.split() == [image_id[7:19]]
    table = pyrun("images").stdout.splitlines()
    assert table[0].split()[:3] == ["REPOSITORY", "TAG", "IMAGE"]
    assert table[1].split()[:3] == ["busybox", "test", image_id[7:19]]
    rows = [json.loads(line) for line in pyrun("images", "--format", "json").stdout.splitlines()]
    assert rows[0]["Repository"] == "busybox" and rows[0]["ID"] == image_id
    assert "DIGEST" in pyrun("images", "--digests").stdout
    inspect = json.loads(pyrun("image", "inspect", "busybox:test").stdout)
    assert inspect[0]["Id"] == image_id
    assert inspect[0]["Config"]["Cmd"] == ["/bin/sh"]
    assert inspect[0]["Comment"] == "hello"
    hist = pyrun("history", "busybox:test")
    assert hist.returncode == 0 and "pyrun import" in hist.stdout
    assert pyrun("history", "-q", "busybox:test").stdout.split() == [image_id[7:19]]


@needs_root
def test_tag_rmi_prune(pyrun: PyrunRunner, busybox_tar: Path) -> None:
    assert pyrun("import", str(busybox_tar), "bb:1").returncode == 0
    assert pyrun("tag", "bb:1", "localhost:5000/bb:2").returncode == 0
    assert "localhost:5000/bb" in pyrun("images").stdout
    res = pyrun("rmi", "localhost:5000/bb:2")
    assert res.returncode == 0 and res.stdout.strip() == "Untagged: localhost:5000/bb:2"
    res = pyrun("rmi", "bb:1")
    assert res.returncode == 0 and "Deleted: sha256:" in res.stdout
    one_line_error(pyrun("rmi", "bb:1"), 1, "No such image: bb:1")
    assert pyrun("image", "prune", "-f").returncode == 0
    res = pyrun("system", "check")
    assert res.returncode == 0 and "consistent" in res.stdout


@needs_root
def test_save_load_stdout_stdin_roundtrip(
    pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path
) -> None:
    assert pyrun("import", str(busybox_tar), "bb:rt").returncode == 0
    before = json.loads(pyrun("inspect", "bb:rt").stdout)[0]
    out = tmp_path / "saved.tar"
    with open(out, "wb") as f:
        res = subprocess.run(
            [sys.executable, "-m", "pyrun.cli", "--root", str(tmp_path / "store"), "save", "bb:rt"],
            stdout=f,
            stderr=subprocess.PIPE,
        )
    assert res.returncode == 0, res.stderr
    assert pyrun("rmi", "bb:rt").returncode == 0
    with open(out, "rb") as f:
        res = subprocess.run(
            [sys.executable, "-m", "pyrun.cli", "--root", str(tmp_path / "store"), "load"],
            stdin=f,
            capture_output=True,
            text=True,
        )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Loaded image: bb:rt"
    after = json.loads(pyrun("inspect", "bb:rt").stdout)[0]
    assert after["Id"] == before["Id"]
    assert after["Descriptor"]["digest"] == before["Descriptor"]["digest"]


@needs_root
@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_save_formats_roundtrip(
    pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path, fmt: str
) -> None:
    assert pyrun("import", str(busybox_tar), "bb:fmt").returncode == 0
    digest = json.loads(pyrun("inspect", "bb:fmt").stdout)[0]["Descriptor"]["digest"]
    out = tmp_path / "a.tar"
    assert pyrun("save", "--format", fmt, "-o", str(out), "bb:fmt").returncode == 0
    other = tmp_path / "other"
    res = subprocess.run(
        [sys.executable, "-m", "pyrun.cli", "--root", str(other), "load", "-i", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "pyrun.cli", "--root", str(other), "inspect", "bb:fmt"],
        capture_output=True,
        text=True,
    )
    assert json.loads(res.stdout)[0]["Descriptor"]["digest"] == digest


@needs_root
def test_image_copy_between_transports(
    pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path
) -> None:
    assert pyrun("import", str(busybox_tar), "bb:c").returncode == 0
    assert pyrun("image", "copy", "-q", "bb:c", f"oci:{tmp_path}/lay:v1").returncode == 0
    assert (tmp_path / "lay" / "index.json").is_file()
    assert pyrun("image", "copy", "-q", f"oci:{tmp_path}/lay:v1", "copied:v1").returncode == 0
    assert (
        pyrun("image", "copy", "-q", "copied:v1", f"docker-archive:{tmp_path}/d.tar:x:y").returncode
        == 0
    )
    assert (
        pyrun("image", "copy", "-q", f"docker-archive:{tmp_path}/d.tar", "again:1").returncode == 0
    )
    ids = {
        json.loads(pyrun("inspect", n).stdout)[0]["Id"] for n in ("bb:c", "copied:v1", "again:1")
    }
    assert len(ids) == 1


def test_bad_input_one_line(pyrun: PyrunRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 100)
    one_line_error(pyrun("load", "-i", str(junk)), 1, "junk.tar")
    one_line_error(pyrun("load", "-i", str(tmp_path / "missing.tar")), 1, "missing.tar")
    one_line_error(pyrun("image", "inspect", "nosuch:image"), 1, "No such image: nosuch:image")
    one_line_error(pyrun("inspect", "nosuch:image"), 1, "No such object: nosuch:image")
    one_line_error(pyrun("tag", "nosuch", "x"), 1, "No such image")
    one_line_error(pyrun("import", str(tmp_path / "missing.tar")), 1, "missing.tar")
    one_line_error(pyrun("import", str(junk), "UPPER/Case:x:y"), 1, "invalid reference format")
    one_line_error(pyrun("import", "-c", "FROB x", str(junk)), 125, "FROB")
    one_line_error(pyrun("save", "-o", str(tmp_path / "o.tar"), "nosuch"), 1, "No such image")
    assert not (tmp_path / "o.tar").exists()
    one_line_error(pyrun("image", "copy", "oci:/nonexistent/x", "y"), 1, "not an OCI image layout")


@needs_root
def test_import_garbage_leaves_nothing(
    pyrun: PyrunRunner, tmp_path: Path, store_root: Path
) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    res = pyrun("import", str(junk), "junk:1")
    one_line_error(res, 125, "layer")
    assert pyrun("images", "-q").stdout == ""
    assert pyrun("system", "check").returncode == 0
    assert list((store_root / "blobs" / "sha256").iterdir()) == []
