"""Image references normalised exactly as Docker's distribution/reference does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrun.errors import InvalidReference
from pyrun.reference import parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:5055/a/b/c:t", "127.0.0.1:5055/a/b/c:t", "127.0.0.1:5055/a/b/c:t"),
        ("quay.io/org/img", "quay.io/org/img:latest", "quay.io/org/img:latest"),
        ("[::1]:5000/img", "[::1]:5000/img:latest", "[::1]:5000/img:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
        ("a_b-c__d/e.f", "docker.io/a_b-c__d/e.f:latest", "a_b-c__d/e.f:latest"),
    ],
)
def test_normalise(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("Busybox", "must be lowercase"),
        ("a" * 64, "64-byte hexadecimal"),
        ("busybox:", "invalid reference format"),
        ("-busybox", "invalid reference format"),
        ("busybox:tag:tag", "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        ("a/" * 130 + "a", "255 characters"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("bad//path", "invalid reference format"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse(text)


component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
# A first component with a dot is a registry host (Docker's rule), so it gets none here.
first_component = st.from_regex(r"[a-z0-9]{1,8}(?:[_-][a-z0-9]{1,8}){0,2}", fullmatch=True)


@given(
    first_component,
    st.lists(component, min_size=0, max_size=3),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
def test_roundtrip(first: str, rest: list[str], tag: str) -> None:
    text = "/".join([first, *rest]) + ":" + tag
    ref = parse(text)
    assert parse(str(ref)) == ref
    assert parse(ref.familiar()) == ref
    assert ref.tag == tag
