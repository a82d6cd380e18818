"""The Dockerfile parser: parser directives (`syntax`, `escape`), line continuations with
comment lines inside, exec (JSON) and shell forms, `--flag=value` options, and variable
substitution (`$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?msg}`).
Errors carry file:line and, for an unknown instruction, the nearest known one."""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from pyrun.errors import PyrunError

INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)  # fmt: skip


class DockerfileError(PyrunError):
    exit_code = 1


class Instruction(NamedTuple):
    cmd: str  # upper case
    flags: dict[str, list[str]]  # --name=value options, in order per name
    args: str  # the rest, unexpanded
    json_args: list[str] | None  # the exec form when `args` is a JSON array of strings
    line: int
    original: str  # as written (continuations joined), for history and the cache key


def _suggest(word: str) -> str:
    import difflib

    close = difflib.get_close_matches(word.upper(), INSTRUCTIONS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    lines = text.splitlines()
    escape = "\\"
    i = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    while i < len(lines):
        m = re.fullmatch(r"\s*#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*", lines[i])
        if not m:
            break
        key, value = m.group(1).lower(), m.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"{path}:{i + 1}: invalid escape character {value!r}")
            escape = value
        i += 1
    out: list[Instruction] = []
    cont = re.compile(r"(?<!" + re.escape(escape) + r")" + re.escape(escape) + r"[ \t]*$")
    while i < len(lines):
        start = i
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = []
        while True:
            m = cont.search(line)
            if not m:
                parts.append(line)
                break
            parts.append(line[: m.start()])
            # Comment lines inside a continued instruction are dropped; blank ones skipped.
            while i < len(lines) and (lines[i].lstrip().startswith("#") or not lines[i].strip()):
                i += 1
            if i >= len(lines):
                break
            line = lines[i]
            i += 1
        joined = "".join(parts).strip()
        word, _, rest = joined.partition(" ")
        cmd = word.upper()
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(
                f"{path}:{start + 1}: unknown instruction: {word}{_suggest(word)}"
            )
        rest = rest.strip()
        if re.search(r"<<-?['\"]?[A-Za-z_]", rest) and cmd in ("RUN", "COPY", "ADD"):
            raise DockerfileError(f"{path}:{start + 1}: heredocs are not supported yet")
        flags: dict[str, list[str]] = {}
        while rest.startswith("--"):
            token, _, remainder = rest.partition(" ")
            name, eq, value = token[2:].partition("=")
            if not name:
                break
            flags.setdefault(name, []).append(value if eq else "true")
            rest = remainder.strip()
        json_args = None
        if rest.startswith("["):
            try:
                value = json.loads(rest)
            except ValueError:
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                json_args = value
        out.append(Instruction(cmd, flags, rest, json_args, start + 1, joined))
    if not out:
        raise DockerfileError(f"{path}: the Dockerfile has no instructions")
    return out


_VAR = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(:?[-+?])([^}]*)|(##?|%%?)([^}]*)|(//?)([^/}]*)(?:/([^}]*))?)?\}"
    r"|([A-Za-z_][A-Za-z0-9_]*))"
)


def _glob_re(pattern: str) -> str:
    """A shell glob (`*`, `?`) as a regex fragment."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def expand(text: str, env: dict[str, str], where: str = "") -> str:
    r"""Docker's substitution in instruction arguments: `$v ${v} ${v:-w} ${v-w} ${v:+w}
    ${v+w} ${v:?msg} ${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}` (globs in p);
    `\$` stays a literal `$`."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(9)
        value = env.get(name)
        op, word = m.group(2), m.group(3) or ""
        if m.group(4):  # prefix / suffix removal: shortest (#, %) or longest (##, %%)
            v = value or ""
            pat = _glob_re(expand(m.group(5) or "", env, where))
            lazy = "" if m.group(4) in ("##", "%%") else "?"
            if m.group(4).startswith("#"):
                found = re.match(f"(?s){pat.replace('.*', '.*' + lazy)}", v)
                return v[found.end() :] if found else v
            # % removes the shortest matching suffix, %% the longest.
            cuts = range(len(v), -1, -1) if lazy else range(len(v) + 1)
            for k in cuts:
                if re.fullmatch(f"(?s){pat}", v[k:]):
                    return v[:k]
            return v
        if m.group(6):  # replacement: first (/) or all (//)
            v = value or ""
            pat = _glob_re(expand(m.group(7) or "", env, where))
            repl = expand(m.group(8) or "", env, where)
            if not pat:
                return v
            return re.sub(f"(?s){pat}", lambda _m: repl, v, count=0 if m.group(6) == "//" else 1)
        if op is None:
            return value or ""
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        kind = op[-1]
        if kind == "-":
            return expand(word, env, where) if unset_or_empty else str(value)
        if kind == "+":
            return "" if unset_or_empty else expand(word, env, where)
        if unset_or_empty:  # "?"
            raise DockerfileError(f"{where}{name}: {word or 'parameter not set'}")
        return str(value)

    pieces = re.split(r"(\\\$)", text)
    return "".join("$" if p == "\\$" else _VAR.sub(sub, p) for p in pieces)


def key_values(args: str) -> dict[str, str]:
    """`K=V K2="v 2"` pairs (ENV, LABEL, --change), or the legacy `K value with spaces`;
    ValueError names what is wrong."""
    import shlex

    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV key value with spaces`
        return {words[0]: args.strip().split(None, 1)[1]}
    out: dict[str, str] = {}
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ValueError(f"expected KEY=VALUE, got {w!r}")
        out[key] = value
    return out


def split_words(text: str) -> list[str]:
    """Shell-like words (quotes, backslashes) for instruction arguments."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError as e:
        raise DockerfileError(f"cannot split {text!r}: {e}") from None
