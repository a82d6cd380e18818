"""The options of `run` and `create` as data, and a parser of the common command lines that
needs no argparse.

`pyrun run` is the command whose start-up users feel, and argparse is the costliest part of
it: importing argparse brings re, enum and gettext, and building `run`'s parser adds ~60
options one by one (together 15-20 ms here, more than the container takes to run). The
parser that argparse builds (cli/parser.py) and `scan` below read one table, so they cannot
disagree on a name, a default or a kind. `scan` takes only what it can read unambiguously:
exact option names, `--opt=value`, a value in the next word, bundled short flags (`-it`),
then the image and the command. Anything else (an abbreviation, `-eVALUE`, a value that
starts with '-', `--help`, a bad number or choice, an unknown option) makes it return None,
and argparse parses the line, with its own messages. tests/test_cli_options.py checks with
hypothesis that whatever `scan` accepts, argparse reads the same way.

This module imports nothing: it is on the start-up path of every `pyrun run`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Kinds: FLAG (store_true), VALUE (a string), INT (an int), APPEND (strings, repeatable).
FLAG, VALUE, INT, APPEND = "flag", "value", "int", "append"

# (option strings, dest, kind, default, help). --help and the positionals (image, command)
# are added by the argparse builder.
CONTAINER_OPTIONS: tuple[tuple[tuple[str, ...], str, str, object, str], ...] = (
    (("--rm",), "rm", FLAG, False, "remove the container when it exits"),
    (("--name",), "name", VALUE, None, "assign a name to the container"),
    (("-i", "--interactive"), "interactive", FLAG, False, "keep STDIN open"),
    (("-t", "--tty"), "tty", FLAG, False, "allocate a pseudo-TTY"),
    (("-e", "--env"), "env", APPEND, None, "set an environment variable"),
    (("--env-file",), "env_file", APPEND, None, "read environment variables from a file"),
    (("-l", "--label"), "label", APPEND, None, "set metadata KEY=VALUE"),
    (("-v", "--volume"), "volume", APPEND, None, "bind mount /host:/ctr[:ro]"),
    (("--mount",), "mount", APPEND, None, "type=bind|tmpfs,target=..."),
    (("--tmpfs",), "tmpfs", APPEND, None, "mount a tmpfs: /path[:options]"),
    (("-w", "--workdir"), "workdir", VALUE, None, "working directory inside the container"),
    (("-u", "--user"), "user", VALUE, None, "user[:group] (name or number)"),
    (("--group-add",), "group_add", APPEND, None, "add supplementary groups"),
    (("-h", "--hostname"), "hostname", VALUE, None, "container host name"),
    (("--entrypoint",), "entrypoint", VALUE, None, "overwrite the image's ENTRYPOINT"),
    (("--read-only",), "read_only", FLAG, False, "mount the root filesystem read-only"),
    (("--privileged",), "privileged", FLAG, False, "give extended privileges"),
    (("--cap-add",), "cap_add", APPEND, None, "add Linux capabilities"),
    (("--cap-drop",), "cap_drop", APPEND, None, "drop Linux capabilities"),
    (("--security-opt",), "security_opt", APPEND, None, "security options"),
    (("--ulimit",), "ulimit", APPEND, None, "ulimit options (nofile=1024:2048)"),
    (
        ("--network", "--net"),
        "network",
        VALUE,
        "bridge",
        "bridge (default), host, none, container:NAME or a user network",
    ),
    (
        ("--network-alias", "--net-alias"),
        "network_alias",
        APPEND,
        None,
        "another name for the container on its user network",
    ),
    (("--ip",), "ip", VALUE, None, "IPv4 address on the network (e.g. 10.211.0.10)"),
    (
        ("-p", "--publish"),
        "publish",
        APPEND,
        None,
        "publish a port: [IP:][HOSTPORT:]CONTAINERPORT[/udp]",
    ),
    (
        ("-P", "--publish-all"),
        "publish_all",
        FLAG,
        False,
        "publish every exposed port to a free host port",
    ),
    (("--dns",), "dns", APPEND, None, "set a DNS server"),
    (("--dns-search",), "dns_search", APPEND, None, "set a DNS search domain"),
    (("--dns-option", "--dns-opt"), "dns_option", APPEND, None, "set a DNS option"),
    (("--add-host",), "add_host", APPEND, None, "add a HOST:IP line to /etc/hosts"),
    (("-m", "--memory"), "memory", VALUE, None, "memory limit (bytes, or with k, m, g)"),
    (
        ("--memory-swap",),
        "memory_swap",
        VALUE,
        None,
        "memory plus swap limit (-1: unlimited swap); needs --memory",
    ),
    (("--cpus",), "cpus", VALUE, None, "number of CPUs (a CFS quota per 100 ms period)"),
    (("-c", "--cpu-shares"), "cpu_shares", INT, None, "CPU shares (relative weight)"),
    (("--cpuset-cpus",), "cpuset_cpus", VALUE, None, "CPUs in which to allow execution (0-3, 0,1)"),
    (("--pids-limit",), "pids_limit", INT, None, "process limit (-1 or 0: unlimited)"),
    (
        ("--restart",),
        "restart",
        VALUE,
        "no",
        "no, on-failure[:max-retries], always, unless-stopped",
    ),
    (("--stop-signal",), "stop_signal", VALUE, None, "signal to stop the container (default SIGTERM)"),
    (("--init",), "init", FLAG, False, "run a reaper as pid 1 that forwards signals"),
    (("--stop-timeout",), "stop_timeout", INT, None, "seconds to wait before SIGKILL on stop"),
    (("--pull",), "pull", VALUE, "missing", "pull policy: missing, always or never"),
)  # fmt: skip
RUN_ONLY_OPTIONS: tuple[tuple[tuple[str, ...], str, str, object, str], ...] = (
    (("-d", "--detach"), "detach", FLAG, False, "run in the background"),
)
CHOICES: dict[str, tuple[str, ...]] = {"pull": ("missing", "always", "never")}

# The global options (before the command word) that `scan` understands.
_GLOBAL = {"--root": ("root", VALUE), "--debug": ("debug", FLAG)}
_GLOBAL_APPEND = ("--insecure-registry",)
GLOBAL_DEFAULTS: dict[str, object] = {"root": None, "debug": False, "insecure_registry": []}

HANDLERS = {"run": "cmd_run", "create": "cmd_create"}


def options_of(command: str) -> tuple[tuple[tuple[str, ...], str, str, object, str], ...]:
    return (RUN_ONLY_OPTIONS + CONTAINER_OPTIONS) if command == "run" else CONTAINER_OPTIONS


def _operand(argv: Sequence[str], i: int, eq: str, value: str) -> tuple[str, int] | None:
    """The value of the option at argv[i] (the text after '=' when there was one, else the next
    word) and the index of its last word; None where argparse reads the line otherwise: no
    value, a '-'-led one, or "--" (which argparse drops)."""
    if not eq:
        i += 1
        if i >= len(argv) or argv[i].startswith("-"):
            return None
        value = argv[i]
    return None if value == "--" else (value, i)


def scan(argv: Sequence[str]) -> dict[str, object] | None:
    """The parsed arguments (argparse's Namespace as a dict, with "handler" naming the
    cli.containers function) of a `run` or `create` line `scan` reads unambiguously; None for
    every other line."""
    out: dict[str, object] = dict(GLOBAL_DEFAULTS)
    insecure: list[str] = []
    out["insecure_registry"] = insecure
    i, n = 0, len(argv)
    # Global options, then the command word.
    while i < n:
        word = argv[i]
        name, eq, value = word.partition("=")
        if name in _GLOBAL:
            dest, kind = _GLOBAL[name]
            if kind == FLAG:
                if eq:
                    return None
                out[dest] = True
            else:
                got = _operand(argv, i, eq, value)
                if got is None:
                    return None
                out[dest], i = got
        elif name in _GLOBAL_APPEND:
            got = _operand(argv, i, eq, value)
            if got is None:
                return None
            value, i = got
            insecure.append(value)
        elif word in HANDLERS:
            break
        else:
            return None
        i += 1
    if i >= n:
        return None
    command = argv[i]
    i += 1
    table = options_of(command)
    longs: dict[str, tuple[str, str]] = {}
    shorts: dict[str, tuple[str, str]] = {}
    for flags, dest, kind, default, _help in table:
        out[dest] = [] if kind == APPEND else default
        for flag in flags:
            (longs if flag.startswith("--") else shorts)[flag] = (dest, kind)

    def take(dest: str, kind: str, value: str) -> bool:
        if kind == INT:
            try:
                out[dest] = int(value)
            except ValueError:
                return False
        elif kind == APPEND:
            out[dest].append(value)  # type: ignore[attr-defined]
        else:
            if dest in CHOICES and value not in CHOICES[dest]:
                return False
            out[dest] = value
        return True

    while i < n:
        word = argv[i]
        if not word.startswith("-") or word == "-":
            break  # the image
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            spec = longs.get(name)
            if spec is None:
                return None  # --help, "--", an abbreviation, an unknown option
        else:
            eq = value = ""
            spec = shorts.get(word)
            if spec is None:
                # Bundled short flags (-it, -dit); anything else (-eVALUE, -e=VALUE) is
                # argparse's.
                bundled = [shorts.get(f"-{c}") for c in word[1:]]
                if not all(b is not None and b[1] == FLAG for b in bundled):
                    return None
                for b in bundled:
                    out[b[0]] = True  # type: ignore[index]
                i += 1
                continue
        dest, kind = spec
        if kind == FLAG:
            if eq:
                return None
            out[dest] = True
        else:
            got = _operand(argv, i, eq, value)
            if got is None or not take(dest, kind, got[0]):
                return None
            i = got[1]
        i += 1
    if i >= n or "--" in argv[i + 1 :]:
        return None  # no image (argparse says so), or a "--" argparse drops from the command
    out["image"] = argv[i]
    out["command"] = list(argv[i + 1 :])
    out["handler"] = HANDLERS[command]
    return out
