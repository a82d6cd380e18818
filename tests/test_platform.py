"""Picking an image from an index by platform, with Docker's (containerd's) fallbacks, and the
error that lists what an index has when nothing fits."""

from __future__ import annotations

import pytest

from pyrun.errors import InvalidArchive
from pyrun.oci import OCI_MANIFEST, parse_platform, select_manifest


def index(*platforms: str) -> dict[str, object]:
    out = []
    for i, p in enumerate(platforms):
        os_, arch, *variant = p.split("/")
        plat = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        out.append(
            {"mediaType": OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 1, "platform": plat}
        )
    return {"schemaVersion": 2, "manifests": out}


@pytest.mark.parametrize(
    ("have", "want", "picked"),
    [
        (["linux/amd64", "linux/arm64"], "linux/arm64", 1),
        (["linux/amd64", "linux/arm64/v8"], "linux/arm64", 1),  # arm64/v8 is arm64
        (["linux/amd64", "linux/aarch64"], "linux/arm64/v8", 1),  # aarch64 is arm64
        (["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7", 1),  # exact before fallback
        (["linux/arm/v5", "linux/arm/v6"], "linux/arm/v7", 1),  # v7 runs v6 before v5
        (["linux/386", "linux/ppc64le"], "linux/amd64", 0),  # amd64 runs 386
        (["linux/arm/v7", "linux/s390x"], "linux/arm64", 0),  # arm64 runs 32-bit arm
        (["windows/amd64", "linux/amd64"], "linux/amd64", 1),
    ],
)
def test_fallbacks(have: list[str], want: str, picked: int) -> None:
    chosen = select_manifest(index(*have), parse_platform(want))
    assert chosen["digest"] == f"sha256:{picked:064x}"


def test_nothing_fits_lists_what_there_is() -> None:
    with pytest.raises(InvalidArchive) as e:
        select_manifest(index("linux/amd64", "linux/arm/v7"), parse_platform("linux/s390x"))
    msg = str(e.value)
    assert "no matching manifest for linux/s390x" in msg
    assert "available: linux/amd64, linux/arm/v7" in msg
    with pytest.raises(InvalidArchive):  # arm/v6 cannot run v7
        select_manifest(index("linux/arm/v7"), parse_platform("linux/arm/v6"))
