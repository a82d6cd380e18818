"""Root filesystem tars for the tests, built on this machine by ci/test-images.sh and cached.

    from images import busybox_tar, debian_tar

    busybox_tar()              # busybox-static with an applet symlink each, /etc/passwd, /etc/group
    debian_tar()               # debootstrap --variant=minbase bookworm, plain tar
    debian_tar("gzip")         # the same tar, gzip -6 (.tar.gz); "zstd" gives zstd -3 (.tar.zst)

Paths come from PYRUN_TEST_BUSYBOX_TAR and PYRUN_TEST_DEBIAN_TAR when set (the compressed Debian
tars lie beside the plain one: "<path>.gz", "<path>.zst"), else from the cache directory
PYRUN_TEST_CACHE (default /var/cache/pyrun-test). A missing file is built by running
ci/test-images.sh, which serialises concurrent builds; building the Debian image needs root and
the network (~40 s). Failure to build raises ImageUnavailable, which a fixture may turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "DEFAULT_CACHE",
    "Compression",
    "ImageUnavailable",
    "busybox_tar",
    "cache_dir",
    "debian_tar",
    "image_env",
]

Compression = Literal["none", "gzip", "zstd"]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SCRIPT: Final = REPO_ROOT / "ci" / "test-images.sh"
DEFAULT_CACHE: Final = Path("/var/cache/pyrun-test")

_SUFFIXES: Final[dict[str, str]] = {
    "none": "",
    "gzip": ".gz",
    "gz": ".gz",
    "zstd": ".zst",
    "zst": ".zst",
}


class ImageUnavailable(RuntimeError):
    """A test image is missing and could not be built (no root, no network, no tools)."""


def cache_dir() -> Path:
    """The cache directory: $PYRUN_TEST_CACHE, else /var/cache/pyrun-test."""
    return Path(os.environ.get("PYRUN_TEST_CACHE") or DEFAULT_CACHE)


def _configured(var: str, default_name: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else cache_dir() / default_name


def image_env() -> dict[str, str]:
    """The environment variables naming the image paths, as ci/test.sh exports them."""
    return {
        "PYRUN_TEST_CACHE": str(cache_dir()),
        "PYRUN_TEST_BUSYBOX_TAR": str(_configured("PYRUN_TEST_BUSYBOX_TAR", "busybox.tar")),
        "PYRUN_TEST_DEBIAN_TAR": str(_configured("PYRUN_TEST_DEBIAN_TAR", "debian.tar")),
    }


def _ensure(path: Path, target: str) -> Path:
    if path.is_file() and path.stat().st_size > 0:
        return path
    bash = shutil.which("bash")
    if bash is None or not SCRIPT.is_file():
        raise ImageUnavailable(f"{path} is missing and {SCRIPT} cannot be run")
    env = {**os.environ, **image_env()}
    proc = subprocess.run(
        [bash, str(SCRIPT), target],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not path.is_file():
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise ImageUnavailable(
            f"could not build {path} (ci/test-images.sh {target}, exit {proc.returncode}):\n{tail}"
        )
    return path


def busybox_tar() -> Path:
    """The busybox rootfs tar (uncompressed, reproducible), built if missing."""
    return _ensure(_configured("PYRUN_TEST_BUSYBOX_TAR", "busybox.tar"), "busybox")


def debian_tar(compression: Compression | Literal["gz", "zst"] = "none") -> Path:
    """The Debian bookworm minbase rootfs tar, plain or compressed, built if missing."""
    try:
        suffix = _SUFFIXES[compression]
    except KeyError:
        raise ValueError(f"unknown compression {compression!r}; use none, gzip or zstd") from None
    plain = _configured("PYRUN_TEST_DEBIAN_TAR", "debian.tar")
    return _ensure(plain.with_name(plain.name + suffix), "debian")
