"""The Dockerfile parser and Docker's substitution rules, without running anything."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrun.build.parser import (
    DockerfileError,
    Heredoc,
    directives,
    expand,
    key_values,
    parse,
    split_words,
    used_names,
    words,
)


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


# --- BuildKit's lexer: nesting, quotes, escapes, errors -------------------------------------


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("${u:-${v##*/}}", "c.tar.gz"),  # nested forms in the word
        ("${u:-${e:-${v%%/*}}}", "a"),
        ("${v:+[${v#a/}]}", "[b/c.tar.gz]"),
        ("'$v'", "$v"),  # nothing expands in single quotes
        ('"$v x"', "a/b/c.tar.gz x"),
        ('"\\$v"', "$v"),
        ("${v/[abc]/X}", "X/b/c.tar.gz"),
        ("${v//[!.]/}", ".."),
        ("${v#a?b}", "/c.tar.gz"),
        ("$1", ""),
        ("a$", "a$"),
        ("${u-}", ""),
        ("${v:?}", "a/b/c.tar.gz"),
    ],
)
def test_substitution_nested_and_quoted(text: str, out: str) -> None:
    assert expand(text, {"v": "a/b/c.tar.gz", "e": ""}) == out


@pytest.mark.parametrize(
    ("text", "err"),
    [
        ("${u?}", "u: is not allowed to be unset"),
        ("${e:?empty here}", "e: empty here"),
        ("${v", "missing '}'"),
        ("${v:x}", "unsupported modifier (:x)"),
        ("${}", "bad substitution"),
        ("'open", "matching '"),
        ('"open', 'matching "'),
    ],
)
def test_substitution_errors(text: str, err: str) -> None:
    with pytest.raises(DockerfileError, match=re.escape(err)):
        expand(text, {"v": "x", "e": ""}, "Dockerfile:7: ")


def test_words_and_used_names() -> None:
    assert words("a 'b c' \"$v d\" e\\ f", {"v": "V"}) == ["a", "b c", "V d", "e f"]
    assert used_names("${A:-$B} $C '${D}'") >= {"A", "B", "C"}
    assert split_words("cp '$x' \"a b\"") == ["cp", "$x", "a b"]
    assert key_values('A=1 B="$x y"', {"x": "X"}) == {"A": "1", "B": "X y"}


_NAME = st.sampled_from(["v", "e", "u"])
_VALUE = st.text(alphabet="ab/.-", max_size=8)
_PAT = st.text(alphabet="ab/.*?", max_size=4)


@settings(max_examples=60, deadline=None)
@given(value=_VALUE, pattern=_PAT, op=st.sampled_from(["#", "##", "%", "%%", "/", "//"]))
def test_pattern_forms_agree_with_bash(value: str, pattern: str, op: str) -> None:
    """`${v#p}` and friends give what bash gives, for any value and glob."""
    form = f"${{v{op}{pattern}}}" if "/" not in op else f"${{v{op}{pattern}/R}}"
    if "/" in pattern and "/" in op:
        return  # bash and BuildKit read an unescaped / in the pattern differently
    ours = expand(form, {"v": value})
    script = f'v={shlex.quote(value)}; printf %s "{form}"'
    theirs = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    assert ours == theirs, (form, value)


@settings(max_examples=200, deadline=None)
@given(
    name=_NAME,
    op=st.sampled_from([":-", "-", ":+", "+"]),
    word=st.text(alphabet="xy z", max_size=5),
    env=st.dictionaries(_NAME, _VALUE, max_size=3),
)
def test_default_forms(name: str, op: str, word: str, env: dict[str, str]) -> None:
    value = env.get(name)
    got = expand(f"${{{name}{op}{word}}}", env)
    unset = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        assert got == (word if unset else value)
    else:
        assert got == ("" if unset else word)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="'\x00"), min_size=1),
                min_size=1, max_size=5))  # fmt: skip
def test_single_quoted_words_round_trip(items: list[str]) -> None:
    """Any words, each single-quoted, come back exactly (no expansion, no splitting)."""
    text = " ".join(f"'{w}'" for w in items)
    assert words(text, {"v": "nope"}) == items


# --- heredocs, directives, flags -------------------------------------------------------------


def test_heredocs() -> None:
    insts = parse(
        "FROM scratch\n"
        "RUN <<EOF\n"
        "echo one\n"
        "echo two\n"
        "EOF\n"
        "COPY <<-'A' <<\"B\" /dest/\n"
        "\tfirst $x\n"
        "\tA\n"
        "second\n"
        "B\n"
        "RUN python3 <<PY; echo done\n"
        "print(1)\n"
        "PY\n"
        "ONBUILD RUN <<X\n"
        "true\n"
        "X\n"
        "CMD cat <<NOT_A_HEREDOC\n"
    )
    run, copy, run2, onbuild, cmd = insts[1:]
    assert run.heredocs == (Heredoc("EOF", "echo one\necho two\n", True, False),)
    assert run.line == 2 and run.end_line == 5
    assert copy.heredocs == (
        Heredoc("A", "first $x\n", False, True),
        Heredoc("B", "second\n", False, False),
    )
    assert copy.line == 6
    assert run2.heredocs[0].content == "print(1)\n" and run2.line == 11
    assert onbuild.heredocs[0].name == "X"
    assert cmd.heredocs == ()
    with pytest.raises(DockerfileError, match="Dockerfile:2: unterminated heredoc EOF"):
        parse("FROM scratch\nRUN <<EOF\necho\n")


def test_directives() -> None:
    text = "# syntax=docker/dockerfile:1\n# check=skip=JSONArgsRecommended;error=true\nFROM x\n"
    d, first = directives(text)
    assert d.syntax == "docker/dockerfile:1" and d.check_skip == {"JSONArgsRecommended"}
    assert d.check_error and first == 2
    with pytest.raises(DockerfileError, match="Dockerfile:1: invalid escape token"):
        parse("# escape=x\nFROM scratch\n")
    with pytest.raises(DockerfileError, match="Dockerfile:2: only one escape"):
        parse("# escape=`\n# escape=\\\nFROM scratch\n")
    with pytest.raises(DockerfileError, match="invalid check directive"):
        parse("# check=bogus\nFROM scratch\n")
    # A directive after a comment is a comment.
    assert parse("# hi\n# escape=`\nFROM scratch\nRUN a `\n")[1].args == "a `"


def test_flags_quoted_and_repeated() -> None:
    inst = parse(
        "FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t "
        '--network=none echo\nCOPY --chown="1:2" --exclude=*.md --exclude=x --link a b\n'
    )
    assert inst[1].flags == {
        "mount": ["type=cache,target=/c", "type=tmpfs,target=/t"],
        "network": ["none"],
    }
    assert inst[2].flags == {"chown": ["1:2"], "exclude": ["*.md", "x"], "link": ["true"]}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["FROM a", "RUN x y", "ENV A=1", "COPY a b", "# c", ""]),
                min_size=1, max_size=12))  # fmt: skip
def test_line_numbers_survive_continuations(body: list[str]) -> None:
    """Every instruction's line is where it starts, whatever continuations come before."""
    lines: list[str] = []
    starts: list[int] = []
    for i, item in enumerate(body):
        if item and not item.startswith("#"):
            starts.append(len(lines) + 1)
            if i % 2:  # split some of them over two lines, with a comment inside
                lines += [item.split(" ")[0] + " \\", "# inside", " " + item.split(" ", 1)[1]]
                continue
        lines.append(item)
    if not starts:
        return
    assert [i.line for i in parse("\n".join(lines) + "\n")] == starts


# --- build checks ------------------------------------------------------------------------------


def test_lint_rules_and_skips() -> None:
    from pyrun.build.checks import lint

    insts = parse(
        "FROM scratch as Build\n"
        "MAINTAINER me\n"
        "ENV key value\n"
        "WORKDIR rel\n"
        "ARG API_KEY=x\n"
        "CMD run me\n"
        'CMD ["again"]\n'
        "run true\n"
    )
    rules = [(w.rule, w.line) for w in lint(insts)]
    assert rules == [
        ("FromAsCasing", 1), ("StageNameCasing", 1), ("MaintainerDeprecated", 2),
        ("LegacyKeyValueFormat", 3), ("WorkdirRelativePath", 4), ("SecretsUsedInArgOrEnv", 5),
        ("JSONArgsRecommended", 6), ("MultipleInstructionsDisallowed", 7),
        ("ConsistentInstructionCasing", 8),
    ]  # fmt: skip
    skipped = lint(insts, frozenset({"JSONArgsRecommended", "StageNameCasing"}))
    assert {w.rule for w in skipped} & {"JSONArgsRecommended", "StageNameCasing"} == set()
    assert lint(insts, frozenset({"all"})) == []
    text = "FROM scratch\nRUN a \\\n\n  b \\\n  # comment\n  c\n"
    assert [(w.rule, w.line) for w in lint(parse(text), lines=text.splitlines())] == [
        ("NoEmptyContinuation", 3),
    ]
    assert str(lint(insts)[2]) == (
        "MaintainerDeprecated: The MAINTAINER instruction is deprecated, use a label instead "
        "to define an image author (line 2)"
    )


@settings(max_examples=150, deadline=None)
@given(
    bodies=st.lists(
        st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"))
                         | st.sampled_from(["\t", "\u2028", "\x0c", "\x1e"]),
                         max_size=12), max_size=5),
        min_size=1, max_size=3,
    ),
    strip=st.booleans(),
    quote=st.sampled_from(["", "'", '"']),
)  # fmt: skip
def test_heredoc_bodies_round_trip(bodies: list[list[str]], strip: bool, quote: str) -> None:
    """Any heredoc bodies (several on one line) come back line for line, tabs stripped with
    <<-, whatever the delimiter's quoting."""
    names = [f"EOF{i}" for i in range(len(bodies))]
    head = " ".join(f"<<{'-' if strip else ''}{quote}{n}{quote}" for n in names)
    lines = ["FROM scratch", f"COPY {head} /dest/"]
    for n, body in zip(names, bodies, strict=True):
        if any(line.lstrip("\t") == n or line.strip() == n for line in body):
            return
        lines += [*body, n]
    lines.append("RUN after")
    insts = parse("\n".join(lines) + "\n")
    assert [i.cmd for i in insts] == ["FROM", "COPY", "RUN"]
    got = insts[1].heredocs
    assert [h.name for h in got] == names
    for h, body in zip(got, bodies, strict=True):
        expected = [line.lstrip("\t") if strip else line for line in body]
        assert h.content == "".join(line + "\n" for line in expected)
        assert h.expand == (quote == "") and h.strip_tabs == strip
    assert insts[2].line == len(lines)
