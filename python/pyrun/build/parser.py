"""The Dockerfile parser and BuildKit's word lexer.

`parse` turns text into instructions: parser directives (`syntax`, `escape`, `check`),
continuation lines with comment lines inside, heredocs (`<<EOF`, `<<-EOF`, quoted delimiters,
several per line) on RUN/COPY/ADD, exec (JSON) and shell forms, `--flag=value` options.
`expand`/`words` do BuildKit's substitution (every `${...}` form, nested, quotes, escapes).
Errors carry file:line and, for an unknown instruction, the nearest known one."""

from __future__ import annotations

import contextlib
import json
import re
from typing import NamedTuple

from pyrun.errors import PyrunError

INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)  # fmt: skip
HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


class DockerfileError(PyrunError):
    exit_code = 1


class Heredoc(NamedTuple):
    name: str  # the delimiter word
    content: str  # the lines between, each ending in a newline (tabs stripped for <<-)
    expand: bool  # an unquoted delimiter: variables are expanded in the content
    strip_tabs: bool  # <<-


class Instruction(NamedTuple):
    cmd: str  # upper case
    flags: dict[str, list[str]]  # --name=value options, in order per name
    args: str  # the rest, unexpanded
    json_args: list[str] | None  # the exec form when `args` is a JSON array of strings
    line: int
    original: str  # as written (continuations joined), for history and the cache key
    heredocs: tuple[Heredoc, ...] = ()
    end_line: int = 0  # the last line the instruction spans (heredoc bodies included)


class Directives(NamedTuple):
    syntax: str | None
    escape: str
    check_skip: frozenset[str]  # rule names, or {"all"}
    check_error: bool


def _suggest(word: str, choices: tuple[str, ...] = INSTRUCTIONS) -> str:
    import difflib

    close = difflib.get_close_matches(word.upper(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def split_lines(text: str) -> list[str]:
    r"""Lines as BuildKit reads them: split at \n only (a \r before it dropped), not at the
    other characters str.splitlines() breaks at."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def directives(text: str, path: str = "Dockerfile") -> tuple[Directives, int]:
    """The parser directives at the top of the file and the index of the first other line."""
    lines = split_lines(text)
    found: dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = re.fullmatch(r"\s*#\s*([a-zA-Z]+)\s*=\s*(.*?)\s*", lines[i])
        if not m:
            break
        key, value = m.group(1).lower(), m.group(2)
        if key not in ("syntax", "escape", "check"):
            break  # an unknown directive is a comment, and ends the directives
        if key in found:
            raise DockerfileError(f"{path}:{i + 1}: only one {key} parser directive can be used")
        found[key] = value
        i += 1
    escape = found.get("escape", "\\")
    if escape not in ("\\", "`"):
        where = list(found).index("escape") + 1
        raise DockerfileError(f"{path}:{where}: invalid escape token {escape!r}: \\ or `")
    skip: set[str] = set()
    error = False
    if "check" in found:
        for part in filter(None, (p.strip() for p in found["check"].split(";"))):
            k, eq, v = part.partition("=")
            if k == "skip" and eq:
                skip.update(x.strip() for x in v.split(",") if x.strip())
            elif k == "error" and v in ("true", "false"):
                error = v == "true"
            else:
                where = list(found).index("check") + 1
                raise DockerfileError(
                    f"{path}:{where}: invalid check directive {part!r}: skip=RULE,... or "
                    "error=true|false"
                )
    return Directives(found.get("syntax"), escape, frozenset(skip), error), i


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    d, i = directives(text, path)
    return parse_lines(split_lines(text), i, d.escape, path)


def parse_lines(lines: list[str], i: int, escape: str, path: str) -> list[Instruction]:
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
        where = f"{path}:{start + 1}"
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(f"{where}: unknown instruction: {word}{_suggest(word)}")
        rest = rest.strip()
        inner = rest.split(None, 1)[0].upper() if cmd == "ONBUILD" and rest else cmd
        heredocs: list[Heredoc] = []
        if inner in HEREDOC_INSTRUCTIONS:
            for m in _HEREDOC.finditer(rest):
                strip, quote, name = m.group(1), m.group(2), m.group(3)
                body: list[str] = []
                while True:
                    if i >= len(lines):
                        raise DockerfileError(
                            f"{where}: unterminated heredoc {name}: no line {name!r} follows"
                        )
                    raw = lines[i]
                    i += 1
                    text = raw.lstrip("\t") if strip else raw
                    if text == name:
                        break
                    body.append(text + "\n")
                heredocs.append(Heredoc(name, "".join(body), not quote, bool(strip)))
        flags, rest = _flags(rest, where)
        json_args = None
        if rest.startswith("["):
            try:
                value = json.loads(rest)
            except ValueError:
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                json_args = value
        out.append(Instruction(cmd, flags, rest, json_args, start + 1, joined, tuple(heredocs), i))
    if not out:
        raise DockerfileError(f"{path}: the Dockerfile has no instructions")
    return out


def _flags(rest: str, where: str) -> tuple[dict[str, list[str]], str]:
    """Leading `--name[=value]` options (a value may be quoted)."""
    flags: dict[str, list[str]] = {}
    while rest.startswith("--"):
        m = re.match(r"--([A-Za-z][A-Za-z0-9-]*)(?:=((?:\"[^\"]*\"|'[^']*'|\S)*))?(?:\s+|$)", rest)
        if not m:
            raise DockerfileError(f"{where}: malformed flag {rest.split()[0]!r}")
        value = m.group(2)
        if value is None:
            value = "true"
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        flags.setdefault(m.group(1), []).append(value)
        rest = rest[m.end() :]
    return flags, rest.strip()


# --- BuildKit's word lexer (frontend/dockerfile/shell/lex.go) -------------------------------


class _Lexer:
    """One word's processing: quotes removed, escapes applied, `$` forms substituted; with
    `split`, unquoted blanks separate words."""

    def __init__(
        self, text: str, env: dict[str, str], escape: str, where: str, subst: bool = True
    ) -> None:
        self.s = text
        self.subst = subst
        self.i = 0
        self.env = env
        self.esc = escape
        self.where = where
        self.used: set[str] = set()

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def error(self, msg: str) -> DockerfileError:
        return DockerfileError(f"{self.where}{msg}")

    def words(self, split: bool, stop: str = "") -> list[str]:
        out: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            c = self.s[self.i]
            if stop and c in stop:
                break
            if split and c in " \t\r\n":
                if started:
                    out.append("".join(cur))
                    cur, started = [], False
                self.i += 1
                continue
            started = True
            if c == self.esc:
                self.i += 1
                if self.i < len(self.s):
                    cur.append(self.s[self.i])
                    self.i += 1
                continue
            if c == "'":
                end = self.s.find("'", self.i + 1)
                if end < 0:
                    raise self.error("unexpected end of statement while looking for matching '")
                cur.append(self.s[self.i + 1 : end])
                self.i = end + 1
                continue
            if c == '"':
                self.i += 1
                cur.append(self._double())
                continue
            if c == "$" and self.subst:
                cur.append(self._dollar())
                continue
            cur.append(c)
            self.i += 1
        if started or not split:
            out.append("".join(cur))
        return out

    def _double(self) -> str:
        cur: list[str] = []
        while True:
            if self.i >= len(self.s):
                raise self.error('unexpected end of statement while looking for matching "')
            c = self.s[self.i]
            if c == '"':
                self.i += 1
                return "".join(cur)
            if c == self.esc and self.i + 1 < len(self.s):
                nxt = self.s[self.i + 1]
                if nxt in ('"', "$", self.esc):
                    cur.append(nxt)
                    self.i += 2
                    continue
                cur.append(c)
                self.i += 1
                continue
            if c == "$" and self.subst:
                cur.append(self._dollar())
                continue
            cur.append(c)
            self.i += 1

    def _name(self) -> str:
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]").match(self.s, self.i)
        if not m:
            return ""
        self.i = m.end()
        return m.group(0)

    def _sub(self, stop: str) -> str:
        return self.words(split=False, stop=stop)[0]

    def _dollar(self) -> str:
        self.i += 1  # the $
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            self.used.add(name)
            return self.env.get(name, "")
        self.i += 1
        name = self._name()
        if not name:
            raise self.error(f"bad substitution in {self.s!r}")
        self.used.add(name)
        value = self.env.get(name)
        c = self.peek()
        if c == "}":
            self.i += 1
            return value or ""
        colon = c == ":"
        if colon:
            self.i += 1
            c = self.peek()
        if c in ("-", "+", "?"):
            self.i += 1
            word = self._sub("}")
            self._close()
            unset = value is None or (colon and value == "")
            if c == "-":
                return word if unset else str(value)
            if c == "+":
                return "" if unset else word
            if unset:
                raise self.error(f"{name}: {word or 'is not allowed to be unset'}")
            return str(value)
        if colon:
            raise self.error(f"unsupported modifier (:{c}) in substitution of {name}")
        if c in ("#", "%"):
            self.i += 1
            longest = self.peek() == c
            if longest:
                self.i += 1
            pattern = self._sub("}")
            self._close()
            return _trim(value or "", pattern, prefix=c == "#", longest=longest)
        if c == "/":
            self.i += 1
            every = self.peek() == "/"
            if every:
                self.i += 1
            pattern = self._sub("/}")
            repl = ""
            if self.peek() == "/":
                self.i += 1
                repl = self._sub("}")
            self._close()
            return _replace(value or "", pattern, repl, every)
        if not c:
            raise self.error(f"missing '}}' in {self.s!r}")
        raise self.error(f"unsupported modifier ({c}) in substitution of {name}")

    def _close(self) -> None:
        if self.peek() != "}":
            raise self.error(f"missing '}}' in {self.s!r}")
        self.i += 1


def _glob_re(pattern: str, greedy: bool) -> str:
    """A shell glob (`*`, `?`, `[...]`) as a regex."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*" if greedy else ".*?")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                neg = body[:1] in ("!", "^")
                body = body[1:] if neg else body
                out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    rx = re.compile(f"(?s){_glob_re(pattern, True)}")
    cuts = range(len(value), -1, -1) if longest == prefix else range(len(value) + 1)
    for k in cuts:
        if prefix and rx.fullmatch(value[:k]):
            return value[k:]
        if not prefix and rx.fullmatch(value[k:]):
            return value[:k]
    return value


def _replace(value: str, pattern: str, repl: str, every: bool) -> str:
    """bash's `${v/p/r}`: at each position the longest non-empty match is replaced."""
    if not pattern:
        return value
    rx = re.compile(f"(?s){_glob_re(pattern, True)}")
    if not value:
        return repl if rx.fullmatch("") else ""
    out: list[str] = []
    i = 0
    done = False
    while i < len(value):
        end = 0
        if not done:
            end = next((j for j in range(len(value), i, -1) if rx.fullmatch(value, i, j)), 0)
        if end:
            out.append(repl)
            i = end
            done = not every
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def expand(text: str, env: dict[str, str], where: str = "", escape: str = "\\") -> str:
    r"""One word with BuildKit's processing: `$v ${v} ${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?msg}
    ${v?msg} ${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}` (globs in p, forms nested in w),
    quotes removed (nothing expands inside single quotes), `\$` a literal `$`."""
    return _Lexer(text, env, escape, where).words(split=False)[0]


def words(text: str, env: dict[str, str], where: str = "", escape: str = "\\") -> list[str]:
    """The words of `text` (unquoted blanks separate them), each processed as by `expand`."""
    return _Lexer(text, env, escape, where).words(split=True)


def used_names(text: str, escape: str = "\\") -> set[str]:
    """The variable names `text` refers to (for the build args a step's key includes)."""
    lx = _Lexer(text, {}, escape, "")
    with contextlib.suppress(DockerfileError):
        lx.words(split=True)
    return lx.used


def key_values(args: str, env: dict[str, str] | None = None, where: str = "") -> dict[str, str]:
    """`K=V K2="v 2"` pairs (ENV, LABEL, ARG, --change), or the legacy `K value with spaces`,
    expanded with `env` (values fixed per instruction); ValueError names what is wrong."""
    env = env or {}
    try:
        ws = words(args, env, where)
    except DockerfileError as e:
        raise ValueError(str(e).removeprefix(where)) from None
    if len(ws) >= 2 and "=" not in args.split(None, 1)[0]:  # legacy `ENV key value w/ spaces`
        return {ws[0]: expand(args.strip().split(None, 1)[1], env, where)}
    out: dict[str, str] = {}
    for w in ws:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise ValueError(f"expected KEY=VALUE, got {w!r}")
        out[key] = value
    return out


def split_words(text: str) -> list[str]:
    """Shell-like words (quotes, backslashes), nothing substituted."""
    return _Lexer(text, {}, "\\", "", subst=False).words(split=True)
