"""The Dockerfile parser and Docker's substitution rules, without running anything."""

from __future__ import annotations

import pytest

from pyrun.build.parser import DockerfileError, expand, key_values, parse


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("$v", "a/b/c.tar.gz"),
        ("${v}x", "a/b/c.tar.gzx"),
        ("${u:-def}", "def"),
        ("${e:-def}", "def"),
        ("${e-def}", ""),
        ("${v:+set}", "set"),
        ("${e+set}", "set"),
        ("${u+set}", ""),
        ("${v#*/}", "b/c.tar.gz"),
        ("${v##*/}", "c.tar.gz"),
        ("${v%.*}", "a/b/c.tar"),
        ("${v%%.*}", "a/b/c"),
        ("${v/b/B}", "a/B/c.tar.gz"),
        ("${v//./_}", "a/b/c_tar_gz"),
        ("\\$v", "$v"),
    ],
)
def test_substitution(text: str, out: str) -> None:
    assert expand(text, {"v": "a/b/c.tar.gz", "e": ""}) == out


def test_required_variable() -> None:
    with pytest.raises(DockerfileError, match="u: needed"):
        expand("${u:?needed}", {})


def test_continuations_directives_and_forms() -> None:
    insts = parse(
        "# escape=`\n"
        "FROM scratch\n"
        "RUN echo a `\n"
        "  # dropped\n"
        "\n"
        "  && echo b\n"
        'CMD ["x", "y"]\n'
        "COPY --chown=1:2 --from=s a b\n",
        "Dockerfile",
    )
    assert [i.cmd for i in insts] == ["FROM", "RUN", "CMD", "COPY"]
    assert insts[1].args == "echo a   && echo b" and insts[1].line == 3
    assert insts[2].json_args == ["x", "y"]
    assert insts[3].flags == {"chown": ["1:2"], "from": ["s"]} and insts[3].args == "a b"


def test_errors_name_the_line() -> None:
    with pytest.raises(
        DockerfileError,
        match=r"Dockerfile:3: unknown instruction: ENTRYPIONT \(did you mean ENTRYPOINT\?\)",
    ):
        parse("FROM scratch\n\nENTRYPIONT x\n")
    with pytest.raises(DockerfileError, match="no instructions"):
        parse("# only a comment\n")


def test_key_values() -> None:
    assert key_values('A=1 B="two words" C=') == {"A": "1", "B": "two words", "C": ""}
    assert key_values("LEGACY value with spaces") == {"LEGACY": "value with spaces"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        key_values("A=1 bare")
