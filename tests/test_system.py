"""`pyrun system df` and `system prune` over every kind of thing the store holds: images,
containers, volumes and the build cache."""

from __future__ import annotations

from pathlib import Path

from helpers import PyrunRunner, needs_root
from pyrun.client import Client

pytestmark = [needs_root]


def df_rows(pyrun: PyrunRunner) -> dict[str, list[str]]:
    r = pyrun("system", "df")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    rows = {}
    for line in lines[1:]:
        name, _, rest = line.partition("  ")
        rows[name] = rest.split()
    return rows


def test_df_counts_what_is_used_and_what_is_not(
    client: Client, pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path
) -> None:
    client.images.import_image(busybox_tar, "bb:df")
    rows = df_rows(pyrun)
    assert set(rows) == {"Images", "Containers", "Local Volumes", "Build Cache"}
    assert rows["Images"][:2] == ["1", "0"]
    assert rows["Images"][-1] == "(100%)"  # nothing uses it: all of it is reclaimable
    cid = pyrun("run", "-d", "-v", "data:/data", "bb:df", "sh", "-c",
                "head -c 300000 /dev/zero > /data/f; head -c 200000 /dev/zero > /big; sleep 60")  # fmt: skip
    assert cid.returncode == 0, cid.stderr
    assert pyrun("run", "-v", "spare:/s", "bb:df", "true").returncode == 0
    df = client.system.df()
    upper = {c["Id"]: c["SizeRw"] for c in df["Containers"]}
    assert upper[cid.stdout.strip()] >= 200000
    sizes = {v["Name"]: v["UsageData"] for v in df["Volumes"]}
    assert sizes["data"]["Size"] >= 300000 and sizes["data"]["RefCount"] == 1
    assert df["Images"][0]["Containers"] == 2
    rows = df_rows(pyrun)
    assert rows["Images"][:2] == ["1", "1"] and rows["Images"][-1] == "(0%)"
    assert rows["Containers"][:2] == ["2", "1"]
    assert rows["Local Volumes"][:2] == ["2", "2"]
    pyrun("rm", "-f", cid.stdout.strip())
    rows = df_rows(pyrun)
    assert rows["Containers"][:2] == ["1", "0"]
    assert rows["Local Volumes"][:2] == ["2", "1"]  # "data" is free now, "spare" still held
    assert rows["Local Volumes"][-1] != "(0%)"


def test_prune_takes_the_build_cache_too(
    client: Client, pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path
) -> None:
    client.images.import_image(busybox_tar, "bb:df")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb:df\nRUN echo one > /one\nRUN echo two > /two\n")
    r = pyrun("build", "-q", "-t", "built:1", str(ctx))
    assert r.returncode == 0, r.stderr
    rows = df_rows(pyrun)
    assert int(rows["Build Cache"][0]) >= 2
    # The cache of a tagged image stays with a plain prune; -a takes it all.
    r = pyrun("system", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert int(df_rows(pyrun)["Build Cache"][0]) >= 2
    assert pyrun("rmi", "built:1").returncode == 0
    r = pyrun("system", "prune", "-a", "-f")
    assert r.returncode == 0, r.stderr
    assert "Deleted build cache objects:" in r.stdout
    assert df_rows(pyrun)["Build Cache"][0] == "0"
    assert client.images.list() == []
