"""cli/options.py reads `run`/`create` lines without argparse: whatever it accepts, argparse
(built from the same table) must read the same way, and what it declines, argparse gets."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrun.cli import options
from pyrun.cli.parser import build_parser


def argparse_fields(argv: list[str]) -> dict[str, object] | None:
    """argparse's reading of `argv` as a dict (None when it rejects the line)."""
    word = next(w for w in argv if w in ("run", "create"))
    parser = build_parser(word)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            ns = parser.parse_args(argv)
    except SystemExit:
        return None
    fields = vars(ns)
    fields.pop("func")
    return fields


def scanned(argv: list[str]) -> dict[str, object] | None:
    fields = options.scan(argv)
    if fields is not None:
        assert (
            fields.pop("handler")
            == options.HANDLERS[next(w for w in argv if w in ("run", "create"))]
        )
    return fields


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rm", "--network", "none", "busybox", "true"],
        ["--root", "/s", "--debug", "run", "-it", "--name=web", "-e", "A=1", "-e", "B", "img"],
        [
            "--insecure-registry",
            "h:5000",
            "--root=/r",
            "create",
            "-m",
            "64m",
            "img",
            "sh",
            "-c",
            "x",
        ],
        ["run", "-dit", "--pids-limit", "10", "-c", "512", "--pull=never", "img", "--rm", "-x"],
        ["run", "--entrypoint", "", "-h", "box", "--net", "host", "img"],
        ["run", "-", "cmd"],
    ],
)
def test_scan_reads_common_lines_as_argparse_does(argv: list[str]) -> None:
    fields = scanned(argv)
    assert fields is not None
    assert fields == argparse_fields(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["run", "--netw", "none", "img"],  # an abbreviation: argparse rejects it
        ["run", "-eA=1", "img"],
        ["run", "--pids-limit", "-1", "img"],  # a value that starts with '-'
        ["run", "--pids-limit", "x", "img"],
        ["run", "--pull", "sometimes", "img"],
        ["run", "--rm=yes", "img"],
        ["run", "--rm"],  # no image
        ["create", "-d", "img"],  # -d is run's only
        ["run", "--", "img"],
        ["-v"],
        ["images"],
        ["--root", "run"],
    ],
)
def test_scan_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert options.scan(argv) is None


# Words a line is made of: every option string of the table, values of every shape (empty,
# '-'-led, numeric, with '='), glued forms, bundles and strangers.
_OPTION_WORDS = sorted(
    {f for flags, *_ in options.RUN_ONLY_OPTIONS + options.CONTAINER_OPTIONS for f in flags}
)
_VALUES = ["", "x", "1", "-1", "0x10", "a=b", "-", "--", "never", "missing", " 5", "-x y"]
_WORDS = st.one_of(
    st.sampled_from(_OPTION_WORDS),
    st.sampled_from(_VALUES),
    st.builds(lambda o, v: f"{o}={v}", st.sampled_from(_OPTION_WORDS), st.sampled_from(_VALUES)),
    st.sampled_from(["-it", "-ti", "-dit", "-iP", "-ie", "-e1", "--help", "--netw", "--r", "img"]),
    st.text(alphabet="-=abcdeimnrtx1 ", max_size=6),
)
_GLOBALS = st.lists(
    st.sampled_from(
        [
            ["--root", "/r"],
            ["--root=/q"],
            ["--debug"],
            ["--insecure-registry", "h:1"],
            ["--debug=1"],
        ]
    ),
    max_size=2,
).map(lambda parts: [w for p in parts for w in p])


@settings(max_examples=600, deadline=None)
@given(
    _GLOBALS,
    st.sampled_from(["run", "create"]),
    st.lists(_WORDS, max_size=8),
)
def test_whatever_scan_accepts_argparse_reads_the_same(
    globals_: list[str], command: str, words: list[str]
) -> None:
    argv = [*globals_, command, *words]
    fields = scanned(argv)
    if fields is not None:
        assert fields == argparse_fields(argv), argv
