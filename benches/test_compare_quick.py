"""benches/compare.py --quick runs end to end and reports every capability, so the comparison
with the peers cannot break silently. Needs root: extraction sets owners and podman runs as root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parent / "compare.py"

# Every row compare.py must report, available or not: (capability, tool).
EXPECTED = [
    ("extract", "pyrun extract_layer"),
    ("extract", "GNU tar -xzf"),
    ("extract", "umoci unpack"),
    ("extract", "GNU tar --zstd -xf"),
    ("extract", "GNU tar -xf"),
    ("sha256", "pyrun sha256_file"),
    ("sha256", "openssl dgst -sha256"),
    ("sha256", "Python hashlib.file_digest"),
    ("sha256", "pyrun sha256_files([a, b])"),
    ("sha256", "2 x openssl dgst, concurrent"),
    ("sha256", "Python hashlib, 2 threads"),
    ("import", "pyrun import"),
    ("import", "podman import"),
    ("import", "pyrun Client.images.import_image"),
    ("start", "pyrun run --rm"),
    ("start", "pyrun Client.containers.run"),
    ("start", "pyrun _core.run_container"),
    ("start", "runc run"),
    ("start", "crun run"),
    ("start", "podman run --rm"),
    ("start", "docker run --rm"),
    ("oci", "pyrun-runtime create+start+delete"),
    ("oci", "runc create+start+delete"),
    ("oci", "crun create+start+delete"),
    ("oci", "pyrun-runtime state (missing)"),
    ("oci", "runc state (missing)"),
    ("oci", "crun state (missing)"),
    ("bridge", "pyrun run --rm"),
    ("bridge", "pyrun Client.containers.run"),
    ("bridge", "runc run"),
    ("bridge", "crun run"),
    ("bridge", "podman run --rm"),
    ("bridge", "docker run --rm"),
    ("bridge", "pyrun bridge -> host"),
    ("bridge", "host loopback"),
    ("vm", "pyrun run --rm"),
    ("scale", "pyrun run -d"),
    ("scale", "podman run -d"),
    ("scale", "docker run -d"),
    ("scale", "pyrun rm -f"),
    ("scale", "podman rm -f -t 0"),
    ("scale", "docker rm -f"),
    ("pull", "pyrun pull"),
    ("pull", "docker pull"),
    ("pull", "podman pull"),
    ("pull", "skopeo copy + umoci unpack"),
    ("pull", "pyrun Client.images.pull"),
    ("push", "pyrun push"),
    ("push", "skopeo copy"),
    ("push", "docker push"),
    ("push", "podman push"),
    ("push", "pyrun Client.images.push"),
    ("build", "pyrun build"),
    ("build", "docker build"),
    ("build", "buildah bud"),
]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: pyrun and umoci extract with owners and device nodes; podman as root",
    ),
]


def test_compare_quick(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--out", str(out), "--tmpdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"compare.py --quick exited {proc.returncode}:\n{proc.stderr}"
    md = (out / "RESULTS.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]

    for key in ("cpu", "cores", "kernel", "cgroup"):
        assert doc["machine"][key], f"machine info lacks {key}"
    tools = (
        "pyrun",
        "GNU tar",
        "umoci",
        "openssl",
        "podman",
        "runc",
        "crun",
        "docker",
        "skopeo",
        "buildah",
    )
    for tool in (*tools, "docker-registry", "qemu"):
        assert doc["versions"][tool], f"no version line for {tool}"
        assert f"- {tool}: " in md

    runs = doc["runs_by_capability"]
    assert sorted(runs) == sorted({cap for cap, _ in EXPECTED}), runs
    assert runs["start"]["rounds"] == 3 and runs["extract"]["rounds"] == 2
    assert runs["scale"]["rounds"] == 2
    assert runs["pull"]["rounds"] == 2 and runs["push"]["rounds"] == 2
    assert runs["build"]["rounds"] == 2 and runs["bridge"]["rounds"] == 2
    assert runs["vm"]["rounds"] == 1
    bridge = {r["tool"]: r["status"] for r in rows if r["capability"] == "bridge"}
    assert bridge["pyrun run --rm"] == bridge["pyrun bridge -> host"] == "ok", bridge
    assert "## Runs" in md
    # The summary in the README's shape: a line per peer beside pyrun's figure.
    summary = md.split("## Summary", 1)[1].split("## Results", 1)[0]
    for r in rows:
        if r["role"] == "peer":
            assert f"| `{r['tool']}`" in summary, f"summary lacks {r['capability']}/{r['tool']}"

    seen = {(r["capability"], r["tool"]) for r in rows}
    missing = [e for e in EXPECTED if e not in seen]
    assert not missing, f"rows missing from results.json: {missing}"

    for r in rows:
        line = next((ln for ln in md.splitlines() if f"| {r['case']} | {r['tool']}" in ln), None)
        assert line is not None, f"RESULTS.md has no row for {r['case']} / {r['tool']}"
        if r["status"] == "ok":
            assert len(r["samples_s"]) == runs[r["capability"]]["rounds"]
            assert r["min_s"] <= r["median_s"] <= r["max_s"]
            assert f"{r['median_s']:.3f}" in line
        else:
            assert r["status"] == "not available" and r["reason"], r
            assert "not available: " in line
        if r["tool"].startswith("pyrun"):
            # pyrun itself must always run: a failure here is a regression, not a missing peer.
            assert r["status"] == "ok", f"pyrun row not available: {r['reason']}"
        elif r["role"] == "peer" and r["status"] == "ok":
            assert r["ratio_peer_over_pyrun"] is not None and r["ratio_peer_over_pyrun"] > 0

    # vm: the qemu row names its accelerator (when it ran) and says why it was chosen.
    vm = [r for r in rows if r["capability"] == "vm" and r["tool"].startswith("qemu-system-x86_64")]
    assert len(vm) == 1, vm
    if vm[0]["status"] == "ok":
        assert vm[0]["tool"] in ("qemu-system-x86_64 -accel kvm", "qemu-system-x86_64 -accel tcg")
        assert "accelerator " in vm[0]["note"] and "the guest kernel's own boot" in vm[0]["note"]
        assert vm[0]["ratio_peer_over_pyrun"] > 0
    # bridge: runc and crun say why they have no bridge.
    for r in rows:
        if r["capability"] == "bridge" and r["tool"] in ("runc run", "crun run"):
            assert "no bridge of its own" in r["reason"], r

    # plots: both PNGs, linked from RESULTS.md.
    for name in ("start-latency.png", "pull-build.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in md

    # scale: the memory of every started tool's monitors, in results.json and in the notes.
    for r in rows:
        if r["capability"] == "scale" and r["tool"].endswith("run -d") and r["status"] == "ok":
            assert r["metrics"]["containers"] == 10 and r["metrics"]["monitor_pss_mb"] > 0, r
            assert " PSS " in r["note"], r

    # pull and push: the image has the base layer plus 5 committed ones; the goal is judged.
    assert "6 layers" in doc["inputs"]["pull image"], doc["inputs"]
    pull = {r["tool"]: r for r in rows if r["capability"] == "pull"}
    if pull["docker pull"]["status"] == "ok":
        assert "docker pull's time (goal <= 0.5x: " in pull["pyrun pull"]["note"]

    # build: a cold build and a no-op rebuild, each with issue 5's goals judged in pyrun's row.
    build = [r for r in rows if r["capability"] == "build" and r["tool"] == "pyrun build"]
    assert [r["case"].rsplit(", ", 1)[1] for r in build] == ["cold build", "no-op rebuild"]
    assert "(goal <= 0.1 s: " in build[1]["note"], build[1]
