"""The CLI's argparse parser: every command, its options and its handler (a function of a
cli module, imported when the command runs). `run` and `create` read their options from
cli/options.py, which also parses their common lines without argparse (see there)."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # the start-up path avoids importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    Handler = Callable[[argparse.Namespace], int]
    Adder = Callable[[Any, str], None]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(125, f"pyrun: {message}\nSee '{self.prog} --help'.\n")


def _cmd(module: str, func: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Handler = getattr(importlib.import_module(f"pyrun.cli.{module}"), func)
        return handler(args)

    return run


def _import(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="create an image from a rootfs tarball (plain, gzip or zstd)")
    p.add_argument("file", help="tarball path, or - for standard input")
    p.add_argument("repository", nargs="?", help="REPOSITORY[:TAG] to name the image")
    p.add_argument(
        "-c", "--change", action="append", default=[], help="apply a Dockerfile instruction"
    )
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("--platform", help="os/arch[/variant] of the image (default: this host)")
    p.set_defaults(func=_cmd("images", "cmd_import"))


def _save(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="save images to a tar archive (docker-archive or OCI)")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", help="write to FILE instead of standard output")
    p.add_argument(
        "--format", default="docker-archive", choices=["docker-archive", "oci", "oci-archive"]
    )
    p.set_defaults(func=_cmd("images", "cmd_save"))


def _load(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="load images from a tar archive (docker save, skopeo, OCI)")
    p.add_argument("-i", "--input", help="read FILE instead of standard input")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform", help="image to pick from a multi-platform archive")
    p.set_defaults(func=_cmd("images", "cmd_load"))


def _history(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="show the history of an image")
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", help="json")
    p.set_defaults(func=_cmd("images", "cmd_history"))


def _tag(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=_cmd("images", "cmd_tag"))


def _rmi(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove images", aliases=["remove"] if name == "rm" else [])
    p.add_argument("images", nargs="+")
    p.add_argument(
        "-f", "--force", action="store_true", help="remove even if in use or multiply tagged"
    )
    p.set_defaults(func=_cmd("images", "cmd_rmi"))


def _images(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list images", aliases=["list"] if name == "ls" else [])
    p.add_argument("repository", nargs="?")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--digests", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", help="json or table")
    p.set_defaults(func=_cmd("images", "cmd_images"))


def _inspect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display detailed information on images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--format", help="json (default)")
    p.set_defaults(func=_cmd("images", "cmd_inspect"))


def _copy(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="copy an image between transports (oci:, oci-archive:, docker-archive:, rootfs:, the store)",
    )
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--platform")
    p.add_argument(
        "-a", "--all", action="store_true",
        help="every platform of a multi-platform image, kept whole (an error where it cannot be)",
    )  # fmt: skip
    p.add_argument(
        "--referrers", action="store_true",
        help="also copy the artifacts that refer to the image (signatures, SBOMs)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd("images", "cmd_copy"))


def _check(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="verify every blob against its digest and every reference")
    p.set_defaults(func=_cmd("system", "cmd_check"))


def _prune(module: str, help_text: str) -> Adder:
    def add(sub: Any, name: str) -> None:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "-a", "--all", action="store_true", help="all unused images, not just dangling ones"
        )
        p.add_argument(
            "-f", "--force", action="store_true", help="do not prompt (pyrun never prompts)"
        )
        p.set_defaults(func=_cmd(module, "cmd_prune"))

    return add


def _df(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="show disk usage")
    p.set_defaults(func=_cmd("system", "cmd_df"))


def _version(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="show the version")
    p.set_defaults(func=_cmd("system", "cmd_version"))


def _container_options(p: Any, command: str) -> None:
    """The options of `run` or `create` (Docker's names), from cli/options.py's table."""
    from pyrun.cli import options

    p.add_argument("--help", action="help", help="show this help message and exit")
    for flags, dest, kind, default, help_text in options.options_of(command):
        if kind == options.FLAG:
            p.add_argument(*flags, dest=dest, action="store_true", help=help_text)
        elif kind == options.APPEND:
            p.add_argument(*flags, dest=dest, action="append", default=[], help=help_text)
        else:
            p.add_argument(
                *flags,
                dest=dest,
                default=default,
                type=int if kind == options.INT else None,
                choices=options.CHOICES.get(dest),
                help=help_text,
            )
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def _run(sub: Any, name: str) -> None:
    # No abbreviated options (Docker has none); a word after the image is the command's even
    # when it abbreviates an option.
    p = sub.add_parser(
        name, help="run a command in a new container", add_help=False, allow_abbrev=False
    )
    _container_options(p, "run")
    p.set_defaults(func=_cmd("containers", "cmd_run"))


def _create(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="create a new container (start it with `start`)",
        add_help=False,
        allow_abbrev=False,
    )
    _container_options(p, "create")
    p.set_defaults(func=_cmd("containers", "cmd_create"))


def _start(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="start stopped containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-a", "--attach", action="store_true", help="follow output, exit with its code")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin (with -a)")
    p.set_defaults(func=_cmd("containers", "cmd_start"))


def _attach(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="attach stdin/stdout/stderr to a running container")
    p.add_argument("container")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("--sig-proxy", action="store_true", help="(accepted)")
    p.set_defaults(func=_cmd("containers", "cmd_attach"))


def _stop(sub: Any, name: str, help_text: str = "stop running containers") -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("containers", nargs="+")
    p.add_argument(
        "-t", "--time", "--timeout", type=int, dest="time", help="seconds before SIGKILL"
    )
    p.add_argument("-s", "--signal", help="signal to send (default: the container's stop signal)")
    p.set_defaults(func=_cmd("containers", "cmd_stop" if name == "stop" else "cmd_restart"))


def _restart(sub: Any, name: str) -> None:
    _stop(sub, name, "restart containers")


def _kill(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="kill running containers")
    p.add_argument("containers", nargs="+")
    p.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")
    p.set_defaults(func=_cmd("containers", "cmd_kill"))


def _wait(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="block until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd("containers", "cmd_wait"))


def _logs(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="fetch the logs of a container")
    p.add_argument("container")
    p.add_argument("-f", "--follow", action="store_true", help="follow the log output")
    p.add_argument("-n", "--tail", default="all", help="lines to show from the end")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--since", help="since a time (RFC 3339, Unix time or a duration like 10m)")
    p.add_argument("--until", help="until a time (same forms as --since)")
    p.set_defaults(func=_cmd("containers", "cmd_logs"))


def _exec(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY (not yet)")
    p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
    p.add_argument("-e", "--env", action="append", default=[], help="set an environment variable")
    p.add_argument(
        "--env-file", action="append", default=[], help="read environment variables from a file"
    )
    p.add_argument("-u", "--user", help="user[:group] (name or number)")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("--privileged", action="store_true", help="give extended privileges")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd("containers", "cmd_exec"))


def _export(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="export a container's filesystem as a tar archive")
    p.add_argument("container")
    p.add_argument("-o", "--output", help="write to FILE instead of standard output")
    p.set_defaults(func=_cmd("containers", "cmd_export"))


def _commit(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="create a new image from a container's changes")
    p.add_argument("container")
    p.add_argument("repository", nargs="?", help="REPOSITORY[:TAG]")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-a", "--author", default="", help='author ("Name <email>")')
    p.add_argument(
        "-c", "--change", action="append", default=[], help="apply a Dockerfile instruction"
    )
    p.add_argument(
        "-p",
        "--pause",
        nargs="?",
        const="true",
        default="true",
        metavar="BOOL",
        help="pause the container during the commit (default true; --pause=false)",
    )
    p.set_defaults(func=_cmd("containers", "cmd_commit"))


def _pause(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="pause all processes within containers (cgroup freezer)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd("containers", "cmd_pause"))


def _unpause(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="unpause all processes within containers")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd("containers", "cmd_unpause"))


def _cp(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="copy files between a container and the host")
    p.add_argument("source", help="CONTAINER:SRC_PATH or a host path")
    p.add_argument("destination", help="CONTAINER:DEST_PATH or a host path")
    p.add_argument("-q", "--quiet", action="store_true", help="(pyrun prints no progress)")
    p.set_defaults(func=_cmd("containers", "cmd_cp"))


def _top(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")
    p.set_defaults(func=_cmd("containers", "cmd_top"))


def _port(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list a container's published ports")
    p.add_argument("container")
    p.add_argument("private_port", nargs="?", help="PORT[/PROTO]")
    p.set_defaults(func=_cmd("containers", "cmd_port"))


def _stats(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display resource usage of running containers")
    p.add_argument("containers", nargs="*")
    p.add_argument("-a", "--all", action="store_true", help="all containers (default: running)")
    p.add_argument(
        "--no-stream",
        action="store_true",
        help="one sample, then exit (default: a new one every second)",
    )
    p.add_argument("--format", help="json")
    p.set_defaults(func=_cmd("containers", "cmd_stats"))


def _pull(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="download an image from a registry")
    p.add_argument("image", help="[REGISTRY/]REPOSITORY[:TAG|@DIGEST]")
    p.add_argument(
        "--platform", help="os/arch[/variant] to pick from an index (default: this host)"
    )
    p.add_argument(
        "--all-platforms", action="store_true",
        help="keep a multi-platform image whole (this host's image is the one run)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.set_defaults(func=_cmd("images", "cmd_pull"))


def _push(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="upload an image to the registry its name points at")
    p.add_argument("image", help="REGISTRY/REPOSITORY[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p.set_defaults(func=_cmd("images", "cmd_push"))


def _login(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name, help="log in to a registry (stores the credentials in ~/.docker/config.json)"
    )
    p.add_argument(
        "server", nargs="?", default="docker.io", help="registry host[:port] (default: Docker Hub)"
    )
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=_cmd("images", "cmd_login"))


def _logout(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="log out from a registry")
    p.add_argument(
        "server", nargs="?", default="docker.io", help="registry host[:port] (default: Docker Hub)"
    )
    p.set_defaults(func=_cmd("images", "cmd_logout"))


def _manifest(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="manifests in registries")
    inner = p.add_subparsers(
        dest="manifest_command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    q = inner.add_parser("inspect", help="print an image's manifest (or index) from its registry")
    q.add_argument("image")
    q.add_argument("-v", "--verbose", action="store_true", help="with its digest and media type")
    q.add_argument(
        "--referrers", action="store_true",
        help="the artifacts that refer to it instead (an OCI index, as the referrers API has it)",
    )  # fmt: skip
    q.add_argument("--artifact-type", help="with --referrers: only this artifactType")
    q.set_defaults(func=_cmd("images", "cmd_manifest_inspect"))
    q = inner.add_parser(
        "rm",
        aliases=["delete"],
        help="delete images from their registry by tag or digest (every tag of that manifest)",
    )
    q.add_argument("images", nargs="+", metavar="IMAGE")
    q.set_defaults(func=_cmd("images", "cmd_manifest_rm"))


def _tags(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list the tags of a repository in its registry")
    p.add_argument("repository", help="REGISTRY/REPOSITORY")
    p.add_argument("--format", help="json (skopeo list-tags's shape); default: one tag a line")
    p.set_defaults(func=_cmd("images", "cmd_tags"))


def _build(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="build an image from a Dockerfile and a context")
    p.add_argument(
        "context", help="the build context: a directory, or - (a tar or a Dockerfile on stdin)"
    )
    p.add_argument("-t", "--tag", action="append", default=[], help="NAME[:TAG] for the image")
    p.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    p.add_argument("--build-arg", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--target", help="the stage to build (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--pull", action="store_true", help="always pull the base images again")
    p.add_argument("--platform", help="the target platform (this machine's only)")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE for the image")
    p.add_argument("--secret", action="append", default=[],
                   help="id=ID,src=FILE or id=ID,env=VAR for RUN --mount=type=secret")  # fmt: skip
    p.add_argument("--progress", default="auto", choices=["auto", "plain", "tty", "quiet"],
                   help="auto (a live view on a terminal), plain, tty or quiet")  # fmt: skip
    p.add_argument("-o", "--output", action="append", default=[],
                   help="type=oci|docker,dest=FILE (also writes the image there)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--iidfile", help="write the image ID to this file")
    p.set_defaults(func=_cmd("build", "cmd_build"))


def _builder_prune(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove the build cache")
    p.add_argument("-a", "--all", action="store_true",
                   help="all of it (default: steps no image uses), cache mounts too")  # fmt: skip
    p.add_argument("-f", "--force", action="store_true", help="do not ask (pyrun never asks)")
    p.set_defaults(func=_cmd("build", "cmd_builder_prune"))


def _ps(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list containers", aliases=["list"] if name == "ls" else [])
    p.add_argument(
        "-a", "--all", action="store_true", help="show all containers (default: running)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        help="id, name, label, status, exited, ancestor, before, since (KEY=VALUE)",
    )
    p.add_argument("--format", help="table, json, or a template like '{{.ID}} {{.Names}}'")
    p.add_argument("-n", "--last", type=int, default=-1, help="the N last created (all states)")
    p.add_argument("-l", "--latest", action="store_true", help="the last created (all states)")
    p.set_defaults(func=_cmd("containers", "cmd_ps"))


def _rm(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove containers", aliases=["remove"] if name == "rm" else [])
    p.add_argument("containers", nargs="+")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true", help="remove its anonymous volumes")
    p.set_defaults(func=_cmd("containers", "cmd_rm"))


def _container_prune(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (pyrun never prompts)")
    p.set_defaults(func=_cmd("containers", "cmd_prune"))


def _container_inspect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display detailed information on containers")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=_cmd("containers", "cmd_inspect"))


def _volume_create(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="create a volume")
    p.add_argument("name", nargs="?", help="volume name (default: a random one)")
    p.add_argument("-l", "--label", action="append", default=[], help="set metadata KEY=VALUE")
    p.add_argument("-d", "--driver", default="local", help="only local")
    p.set_defaults(func=_cmd("volumes", "cmd_create"))


def _volume_ls(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list volumes", aliases=["list"] if name == "ls" else [])
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.add_argument("--format", help="json")
    p.set_defaults(func=_cmd("volumes", "cmd_ls"))


def _volume_inspect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display detailed information on volumes")
    p.add_argument("volumes", nargs="+")
    p.set_defaults(func=_cmd("volumes", "cmd_inspect"))


def _volume_rm(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove volumes", aliases=["remove"] if name == "rm" else [])
    p.add_argument("volumes", nargs="+")
    p.add_argument("-f", "--force", action="store_true", help="even when a container uses it")
    p.set_defaults(func=_cmd("volumes", "cmd_rm"))


def _volume_prune(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove unused anonymous volumes (-a: all unused)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (pyrun never prompts)")
    p.set_defaults(func=_cmd("volumes", "cmd_prune"))


def _network_create(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="create a bridge network")
    p.add_argument("name")
    p.add_argument("-d", "--driver", default="bridge", help="only bridge")
    p.add_argument("--subnet", help="subnet in CIDR form (default: a free /24 of 10.211-219.x)")
    p.add_argument("--gateway", help="gateway address (default: the subnet's first)")
    p.add_argument(
        "--internal", action="store_true", help="no access to or from outside the network"
    )
    p.add_argument("-l", "--label", action="append", default=[], help="set metadata KEY=VALUE")
    p.set_defaults(func=_cmd("networks", "cmd_create"))


def _network_ls(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="list networks", aliases=["list"] if name == "ls" else [])
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p.add_argument("--no-trunc", action="store_true", help="full IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="name=, id=, type=custom")
    p.add_argument("--format", help="json")
    p.set_defaults(func=_cmd("networks", "cmd_ls"))


def _network_inspect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="display detailed information on networks")
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=_cmd("networks", "cmd_inspect"))


def _network_rm(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove networks", aliases=["remove"] if name == "rm" else [])
    p.add_argument("networks", nargs="+")
    p.set_defaults(func=_cmd("networks", "cmd_rm"))


def _network_prune(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="remove unused user networks")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (never does)")
    p.set_defaults(func=_cmd("networks", "cmd_prune"))


def _network_connect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="network-scoped alias")
    p.add_argument("--ip", help="IPv4 address")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=_cmd("networks", "cmd_connect"))


def _network_disconnect(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="accepted (always forced)")
    p.add_argument("network")
    p.add_argument("container")
    p.set_defaults(func=_cmd("networks", "cmd_disconnect"))


def _group(title: str, commands: dict[str, Adder]) -> Adder:
    def add(sub: Any, name: str) -> None:
        p = sub.add_parser(name, help=title)
        inner = p.add_subparsers(
            dest=f"{name}_command", metavar="COMMAND", parser_class=_Parser, required=True
        )
        for cname, adder in commands.items():
            adder(inner, cname)

    return add


IMAGE_COMMANDS: dict[str, Adder] = {
    "ls": _images,
    "inspect": _inspect,
    "history": _history,
    "import": _import,
    "load": _load,
    "save": _save,
    "tag": _tag,
    "rm": _rmi,
    "prune": _prune("images", "remove dangling images (all unused with -a)"),
    "copy": _copy,
    "build": _build,
    "pull": _pull,
    "push": _push,
    "tags": _tags,
}
CONTAINER_COMMANDS: dict[str, Adder] = {
    "run": _run,
    "create": _create,
    "start": _start,
    "attach": _attach,
    "stop": _stop,
    "restart": _restart,
    "kill": _kill,
    "pause": _pause,
    "unpause": _unpause,
    "wait": _wait,
    "logs": _logs,
    "exec": _exec,
    "export": _export,
    "commit": _commit,
    "cp": _cp,
    "top": _top,
    "port": _port,
    "stats": _stats,
    "ls": _ps,
    "rm": _rm,
    "prune": _container_prune,
    "inspect": _container_inspect,
}
VOLUME_COMMANDS: dict[str, Adder] = {
    "create": _volume_create,
    "ls": _volume_ls,
    "inspect": _volume_inspect,
    "rm": _volume_rm,
    "prune": _volume_prune,
}
NETWORK_COMMANDS: dict[str, Adder] = {
    "create": _network_create,
    "ls": _network_ls,
    "inspect": _network_inspect,
    "rm": _network_rm,
    "prune": _network_prune,
    "connect": _network_connect,
    "disconnect": _network_disconnect,
}
SYSTEM_COMMANDS: dict[str, Adder] = {
    "check": _check,
    "prune": _prune("system", "remove unused data"),
    "df": _df,
}
# Docker's top-level shortcuts: every container command but ls/prune/inspect (`ps`, and
# `inspect` is the images-or-containers one), and the usual image commands.
COMMANDS: dict[str, Adder] = {
    **{k: v for k, v in CONTAINER_COMMANDS.items() if k not in ("ls", "prune", "inspect")},
    "ps": _ps,
    "images": _images,
    "build": _build,
    "pull": _pull,
    "push": _push,
    "login": _login,
    "logout": _logout,
    "manifest": _manifest,
    "inspect": _inspect,
    "history": _history,
    "import": _import,
    "load": _load,
    "save": _save,
    "tag": _tag,
    "rmi": _rmi,
    "image": _group("manage images", IMAGE_COMMANDS),
    "container": _group("manage containers", CONTAINER_COMMANDS),
    "volume": _group("manage volumes", VOLUME_COMMANDS),
    "network": _group("manage networks", NETWORK_COMMANDS),
    "system": _group("manage pyrun", SYSTEM_COMMANDS),
    "builder": _group("manage the build cache", {"prune": _builder_prune}),
    "version": _version,
}
_GLOBAL_WITH_VALUE = ("--root", "--insecure-registry")


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named on the line, skipping global options (so only its parser is built)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _GLOBAL_WITH_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with `only`, just that command's (building all costs ~20 ms)."""
    from pyrun import __version__

    parser = _Parser(prog="pyrun", description="Build, ship and run OCI containers.")
    parser.add_argument("--root", help="store root (default: $PYRUN_ROOT or /var/lib/pyrun)")
    parser.add_argument("--debug", action="store_true", help="print tracebacks for errors")
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="reach this registry over plain HTTP (localhost and 127.0.0.0/8 always are)",
    )
    parser.add_argument("-v", "--version", action="version", version=f"pyrun version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, adder in COMMANDS.items():
        if only is None or only == name:
            adder(sub, name)
    return parser
