"""Build checks: BuildKit's Dockerfile lint rules that need no build to decide, reported as
warnings (the `check` parser directive skips some or all of them, or makes them errors)."""

from __future__ import annotations

import re
from typing import NamedTuple

from pyrun.build.parser import Instruction

SECRET_WORDS = re.compile(r"(?i)(^|_)(api_?key|auth|credential|passw(or)?d|secret|token)(_|$)")


class Warning_(NamedTuple):
    rule: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message} (line {self.line})"


def lint(
    insts: list[Instruction],
    skip: frozenset[str] = frozenset(),
    lines: list[str] | None = None,
    escape: str = "\\",
) -> list[Warning_]:
    """The warnings for these instructions (in order), without the skipped rules; `lines`
    (the file's) for the rules about lines."""
    if "all" in skip:
        return []
    out: list[Warning_] = []
    continued = False
    for n, text in enumerate(lines or [], 1):
        if continued and not text.strip():
            out.append(Warning_("NoEmptyContinuation", n,
                                "Empty continuation line"))  # fmt: skip
        elif not text.lstrip().startswith("#"):
            continued = text.rstrip(" \t").endswith(escape)
    upper = sum(1 for i in insts if i.original.split(" ", 1)[0].isupper())
    majority_upper = upper * 2 >= len(insts)
    seen_absolute_workdir = False
    per_stage: dict[str, int] = {}
    for inst in insts:
        word = inst.original.split(" ", 1)[0]
        if majority_upper and not word.isupper():
            out.append(Warning_("ConsistentInstructionCasing", inst.line,
                                f"Command '{word}' should match the case of the command "
                                "majority (uppercase)"))  # fmt: skip
        elif not majority_upper and not word.islower():
            out.append(Warning_("ConsistentInstructionCasing", inst.line,
                                f"Command '{word}' should match the case of the command "
                                "majority (lowercase)"))  # fmt: skip
        if inst.cmd == "FROM":
            per_stage = {}
            seen_absolute_workdir = False
            words = inst.args.split()
            if len(words) == 3 and words[1].lower() == "as":
                if words[1].isupper() != word.isupper() or words[1].islower() != word.islower():
                    out.append(Warning_("FromAsCasing", inst.line,
                                        f"'{words[1]}' and '{word}' keywords' casing do not "
                                        "match"))  # fmt: skip
                if words[2] != words[2].lower():
                    out.append(Warning_("StageNameCasing", inst.line,
                                        f"Stage name '{words[2]}' should be lowercase"))  # fmt: skip
        elif inst.cmd in ("CMD", "ENTRYPOINT") and inst.json_args is None:
            out.append(Warning_("JSONArgsRecommended", inst.line,
                                f"JSON arguments recommended for {inst.cmd} to prevent "
                                "unintended behavior related to OS signals"))  # fmt: skip
        elif inst.cmd == "MAINTAINER":
            out.append(Warning_("MaintainerDeprecated", inst.line,
                                "The MAINTAINER instruction is deprecated, use a label instead "
                                "to define an image author"))  # fmt: skip
        elif inst.cmd in ("ENV", "LABEL") and inst.args and "=" not in inst.args.split()[0]:
            out.append(Warning_("LegacyKeyValueFormat", inst.line,
                                f'"{inst.cmd} key=value" should be used instead of legacy '
                                f'"{inst.cmd} key value" format'))  # fmt: skip
        elif inst.cmd == "WORKDIR":
            path = inst.args.strip()
            if path.startswith(("/", "$")):
                seen_absolute_workdir = True
            elif not seen_absolute_workdir:
                out.append(Warning_("WorkdirRelativePath", inst.line,
                                    f"Relative workdir '{path}' can have unexpected results if "
                                    "the base image changes"))  # fmt: skip
        if inst.cmd in ("ARG", "ENV"):
            for part in inst.args.split():
                name = part.split("=", 1)[0]
                if SECRET_WORDS.search(name):
                    out.append(Warning_("SecretsUsedInArgOrEnv", inst.line,
                                        "Do not use ARG or ENV instructions for sensitive data "
                                        f'({inst.cmd} "{name}")'))  # fmt: skip
        if inst.cmd in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
            per_stage[inst.cmd] = per_stage.get(inst.cmd, 0) + 1
            if per_stage[inst.cmd] == 2:
                out.append(Warning_("MultipleInstructionsDisallowed", inst.line,
                                    f"Multiple {inst.cmd} instructions should not be used in "
                                    "the same stage because only the last one will be "
                                    "used"))  # fmt: skip
    out.sort(key=lambda w: w.line)
    return [w for w in out if w.rule not in skip]
