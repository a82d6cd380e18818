"""Container commands: run, create, start, stop, restart, kill, wait, logs, exec, ps, rm,
container prune, container inspect."""

from __future__ import annotations

import json
import sys

from pyrun.cli.output import human_ago, print_json, table
from pyrun.client import Client
from pyrun.errors import PyrunError
from pyrun.runtime.containers import Container, start_detached
from pyrun.runtime.spec import parse_signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from pyrun.runtime.template import Sink


class UsageError(PyrunError):
    exit_code = 125


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "env": args.env,
        "workdir": args.workdir,
        "user": args.user,
        "group_add": args.group_add,
        "hostname": args.hostname,
        "read_only": args.read_only,
        "privileged": args.privileged,
        "cap_add": args.cap_add,
        "cap_drop": args.cap_drop,
        "security_opt": args.security_opt,
        "ulimits": args.ulimit,
        "network": args.network,
        "network_aliases": args.network_alias,
        "ip": args.ip,
        "publish": args.publish,
        "publish_all": args.publish_all,
        "dns": args.dns,
        "dns_search": args.dns_search,
        "dns_option": args.dns_option,
        "extra_hosts": args.add_host,
        "entrypoint": None if args.entrypoint is None else [args.entrypoint],
        "memory": args.memory,
        "memory_swap": args.memory_swap,
        "cpus": args.cpus,
        "cpu_shares": args.cpu_shares,
        "cpuset_cpus": args.cpuset_cpus,
        "pids_limit": args.pids_limit,
        "volumes": args.volume,
        "mounts": args.mount,
        "tmpfs": args.tmpfs,
        "restart": args.restart,
        "stop_signal": args.stop_signal,
        "stop_timeout": args.stop_timeout,
        "labels": args.label,
        "init": args.init,
        "tty": args.tty,
        "interactive": args.interactive,
    }
    for path in args.env_file:
        fields["env"] = read_env_file(path) + fields["env"]
    return fields


def _engine_errors(e: PyrunError) -> PyrunError:
    # Docker's `run`/`create` report engine failures with 125 (or 126/127 from the runtime).
    if e.exit_code == 1:
        e.exit_code = 125
    return e


def _template_sink(args: argparse.Namespace, client: Client) -> Sink | None:
    """Where the line's run template goes, when the `pyrun` executable handed this line over
    (with its key) and a run template can replay it (runtime/template.py); else None."""
    line = getattr(args, "line_template", None)
    if line is None:
        return None
    from pyrun.runtime import template

    if not template.expressible(args):
        return None
    key, argv = line
    store = client.store
    return template.Sink(argv, lambda recipe: template.save(store, "run", key, recipe))


def cmd_run(args: argparse.Namespace) -> int:
    client = Client()
    fields = _fields(args)
    try:
        if args.detach or args.restart not in ("no", ""):
            c = client.containers._create(
                args.image,
                args.command,
                remove=args.rm,
                name=args.name,
                fields=fields,
                pull=args.pull,
            )
            try:
                start_detached(c)
            except PyrunError:
                if args.rm:
                    c.remove(force=True)
                raise
        else:
            _c, status = client.containers._run(
                args.image,
                args.command,
                remove=args.rm,
                name=args.name,
                stdio=None,
                fields=fields,
                interactive=args.interactive,
                pull=args.pull,
                template=_template_sink(args, client),
            )
            return status
    except PyrunError as e:
        raise _engine_errors(e) from None
    if args.detach:
        print(c.id)
        return 0
    return follow_run(c)


def follow_run(c: Container) -> int:
    """Stream the container's output until its current run ends; forward SIGINT, SIGTERM,
    SIGHUP to it meanwhile (Docker's sig-proxy). Returns the exit code of that run."""
    import signal

    from pyrun.runtime.logs import follow_logs, write_to_fds

    def forward(signum: int, _frame: object) -> None:
        c._signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        first = c.state.get("restart_count", 0)
        write_to_fds(follow_logs(c, follow=True, until_run_ends=first))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    c.reload()
    try:
        code = c.state.get("exit_code", 0)
    except PyrunError:  # removed by --rm: the log said it all
        return 0
    return int(code) if isinstance(code, int) else 0


def cmd_attach(args: argparse.Namespace) -> int:
    from pyrun.runtime.attach import attach as attach_socket

    return attach_socket(Client().containers.get(args.container), stdin=not args.no_stdin)


def cmd_create(args: argparse.Namespace) -> int:
    try:
        c = Client().containers._create(
            args.image,
            args.command,
            remove=args.rm,
            name=args.name,
            fields=_fields(args),
            pull=args.pull,
        )
    except PyrunError as e:
        raise _engine_errors(e) from None
    print(c.id)
    return 0


def _each(refs: list[str], action: Callable[[Container, str], None]) -> int:
    """Docker's multi-container commands: act on each, print errors, exit 1 if any failed."""
    client = Client()
    status = 0
    for ref in refs:
        try:
            action(client.containers.get(ref), ref)
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = e.exit_code if e.exit_code in (125, 126, 127) else 1
    return status


def cmd_start(args: argparse.Namespace) -> int:
    if args.attach or args.interactive:
        if len(args.containers) != 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        c = Client().containers.get(args.containers[0])
        start_detached(c)
        if args.interactive:  # stdin too: through the monitor's attach socket
            from pyrun.runtime.attach import attach as attach_socket

            return attach_socket(c, stdin=True)
        return follow_run(c)

    def start(c: Container, ref: str) -> None:
        start_detached(c)
        print(ref)

    return _each(args.containers, start)


def _stop_each(args: argparse.Namespace, *, restart: bool) -> int:
    def stop(c: Container, ref: str) -> None:
        c.stop(args.time, args.signal)
        if restart:
            start_detached(c)
        print(ref)

    return _each(args.containers, stop)


def cmd_stop(args: argparse.Namespace) -> int:
    return _stop_each(args, restart=False)


def cmd_restart(args: argparse.Namespace) -> int:
    return _stop_each(args, restart=True)


def cmd_kill(args: argparse.Namespace) -> int:
    parse_signal(args.signal)  # a bad signal is a usage error before anything is touched

    def kill(c: Container, ref: str) -> None:
        c.kill(args.signal)
        print(ref)

    return _each(args.containers, kill)


def cmd_pause(args: argparse.Namespace) -> int:
    def pause(c: Container, ref: str) -> None:
        c.pause()
        print(ref)

    return _each(args.containers, pause)


def cmd_unpause(args: argparse.Namespace) -> int:
    def unpause(c: Container, ref: str) -> None:
        c.unpause()
        print(ref)

    return _each(args.containers, unpause)


def cmd_wait(args: argparse.Namespace) -> int:
    def wait(c: Container, ref: str) -> None:
        print(c.wait_exit(), flush=True)

    return _each(args.containers, wait)


def cmd_logs(args: argparse.Namespace) -> int:
    from pyrun.runtime.logs import follow_logs, write_to_fds

    c = Client().containers.get(args.container)
    write_to_fds(
        follow_logs(
            c,
            timestamps=args.timestamps,
            tail=args.tail,
            since=args.since,
            until=args.until,
            follow=args.follow,
        )
    )
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from pyrun.runtime.containers import exec_in

    if not args.command:
        raise UsageError('"pyrun exec" requires at least 2 arguments: CONTAINER COMMAND [ARG...]')
    env = list(args.env)
    for path in args.env_file:
        env = read_env_file(path) + env
    c = Client().containers.get(args.container)
    if args.detach:
        return _exec_detached(c, args, env)
    return exec_in(
        c,
        args.command,
        user=args.user,
        env=env,
        workdir=args.workdir,
        privileged=args.privileged,
        tty=args.tty,
        interactive=args.interactive,
    )


def _exec_detached(c: Container, args: argparse.Namespace, env: list[str]) -> int:
    """`exec -d`: the command runs in the container in the background (its output is
    discarded, as Docker does); this returns once it is started. A command that is not there
    or not executable fails here first (127/126)."""
    import os

    from pyrun.runtime.containers import ACTIVE, ContainerNotRunning, exec_in

    if c.status not in ACTIVE:
        raise ContainerNotRunning(f"container {c.name} is not running")
    _check_executable(c, args.command[0], env)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and _exits
        code = 125
        try:
            os.close(r)
            os.setsid()
            if os.fork():
                os._exit(0)  # the grandchild is reparented: nobody waits for it here
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.write(w, b"ok")
            os.close(w)
            code = exec_in(c, args.command, user=args.user, env=env, workdir=args.workdir,
                           privileged=args.privileged, tty=False, interactive=False)  # fmt: skip
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        started = f.read() == b"ok"
    if not started:
        raise PyrunError("exec -d: the background process could not be started")
    return 0


def _check_executable(c: Container, command: str, env: list[str]) -> None:
    """127 when `command` is not found (on the container's PATH), 126 when not executable."""
    import os

    from pyrun.runtime.containers import ContainerStartError
    from pyrun.runtime.users import secure_join

    path = next((e[5:] for e in reversed(env) if e.startswith("PATH=")), None)
    if path is None:
        spec_env = c.bundle_spec().get("process", {}).get("env", [])
        path = next((e[5:] for e in spec_env if e.startswith("PATH=")), "/usr/bin:/bin")
    candidates = [command] if "/" in command else [f"{d or '.'}/{command}" for d in path.split(":")]
    root = f"/proc/{c.pid}/root"  # the container's view, its volumes included
    for cand in candidates:
        p = secure_join(root, cand)
        if os.path.isfile(p):
            if not os.access(p, os.X_OK):
                raise ContainerStartError(f"exec {command}: permission denied", 126)
            return
    where = "no such file or directory" if "/" in command else "executable file not found in $PATH"
    raise ContainerStartError(f"exec: {command!r}: {where}", 127)


def read_env_file(path: str) -> list[str]:
    """Docker's --env-file: KEY=VALUE lines, bare KEY taken from this environment, # comments."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key = text.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(
                f"{path}:{n}: invalid environment variable {key!r}: contains whitespace or is empty"
            )
        out.append(text)
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from pyrun.runtime.fs import export

    c = Client().containers.get(args.container)
    if args.output:
        export(c, args.output)
        return 0
    if sys.stdout.isatty():
        raise UsageError("refusing to write a tar archive to a terminal: use -o FILE or redirect")
    export(c, "/dev/stdout")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from pyrun.reference import parse
    from pyrun.runtime.fs import commit

    client = Client()
    c = client.containers.get(args.container)
    names = [parse(args.repository)] if args.repository else []
    pause = str(args.pause).lower()
    if pause not in ("true", "false", "1", "0"):
        raise UsageError(f"invalid value {args.pause!r} for --pause: true or false")
    digest = commit(
        c,
        names,
        message=args.message,
        author=args.author,
        changes=args.change,
        pause=pause in ("true", "1"),
    )
    print(client.store.get(digest).id)
    return 0


def _split_container_path(arg: str) -> tuple[str | None, str]:
    """Docker's rule: CONTAINER:PATH unless the text before ':' holds a '/' (a host path)."""
    head, sep, rest = arg.partition(":")
    if sep and head and "/" not in head:
        return head, rest
    return None, arg


def cmd_cp(args: argparse.Namespace) -> int:
    from pyrun.runtime.fs import copy_from, copy_to

    src_c, src = _split_container_path(args.source)
    dst_c, dst = _split_container_path(args.destination)
    if (src_c is None) == (dst_c is None):
        raise UsageError(
            "copying between containers or between host paths is not supported: "
            "exactly one of SOURCE and DESTINATION must be CONTAINER:PATH"
        )
    client = Client()
    if src_c is not None:
        copy_from(client.containers.get(src_c), src, dst)
    else:
        assert dst_c is not None
        copy_to(client.containers.get(dst_c), src, dst)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from pyrun.runtime.fs import top

    header, rows = top(Client().containers.get(args.container), args.ps_args)
    table(rows, header)
    return 0


def cmd_port(args: argparse.Namespace) -> int:
    """Docker's `port`: `80/tcp -> 0.0.0.0:32768` per binding (of a running container)."""
    ports = Client().containers.get(args.container).attrs["NetworkSettings"]["Ports"] or {}
    want = args.private_port
    if want is not None and "/" not in want:
        want += "/tcp"
    if want is not None and want not in ports:
        raise PyrunError(f"no public port '{want}' published for {args.container}")
    for key in sorted(ports, key=lambda k: (int(k.split("/")[0]), k)):
        if want is not None and key != want:
            continue
        for b in ports[key]:
            addr = f"{b['HostIp']}:{b['HostPort']}"
            print(addr if want is not None else f"{key} -> {addr}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:

    import time

    client = Client()
    if args.no_stream:
        _print_stats(args, _sample(client, args))
        return 0
    # Streaming: a fresh table every second (the screen redrawn on a terminal) until Ctrl-C,
    # or until every named container has stopped.
    tty = sys.stdout.isatty()
    try:
        while True:
            started = time.monotonic()
            samples = _sample(client, args)
            if tty:
                sys.stdout.write("\x1b[2J\x1b[H")
            _print_stats(args, samples)
            sys.stdout.flush()
            if args.containers and not samples:
                return 0
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


def _sample(client: Client, args: argparse.Namespace) -> list[dict[str, Any]]:
    from pyrun.runtime.containers import ACTIVE, ContainerNotRunning
    from pyrun.runtime.fs import stats

    if args.containers:
        targets = [client.containers.get(r) for r in args.containers]
    else:
        targets = client.containers.list(all=args.all)
    out = []
    for c in targets:
        if c.status in ACTIVE:
            try:
                out.append(stats(c))
            except (IndexError, OSError, ContainerNotRunning):
                continue  # it stopped while being sampled
    return out


def _print_stats(args: argparse.Namespace, samples: list[dict[str, Any]]) -> None:
    from pyrun.cli.output import human_size

    if args.format == "json":
        for s in samples:
            print(json.dumps(s))
        return

    def iec(n: float) -> str:
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024 or unit == "TiB":
                return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
            n /= 1024
        return f"{n}B"

    rows = [
        [
            s["ID"][:12],
            s["Name"],
            f"{s['CPUPerc']:.2f}%",
            f"{iec(s['MemUsage'])} / {iec(s['MemLimit'])}",
            f"{s['MemPerc']:.2f}%",
            f"{human_size(s['NetIO'][0])} / {human_size(s['NetIO'][1])}",
            f"{human_size(s['BlockIO'][0])} / {human_size(s['BlockIO'][1])}",
            str(s["PIDs"]),
        ]
        for s in samples
    ]
    header = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
              "BLOCK I/O", "PIDS"]  # fmt: skip
    table(rows, header)


def _status_text(c: Container) -> str:
    st = c.state
    status = c.status
    if status == "running":
        up = "Up " + human_ago(str(st.get("started_at", ""))).removesuffix(" ago")
        return f"{up} (Paused)" if c.paused else up
    if status == "restarting":
        return f"Restarting ({st.get('exit_code', 0)}) {human_ago(str(st.get('finished_at', '')))}"
    if status == "exited":
        return f"Exited ({st.get('exit_code', 0)}) {human_ago(str(st.get('finished_at', '')))}"
    return "Created"


_PS_FILTERS = ("id", "name", "label", "status", "exited", "ancestor", "before", "since")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _ps_filter(containers: list[Container], filters: list[str]) -> list[Container]:
    """Docker's `ps --filter`: the same key ORs its values, different keys AND."""
    import re

    wanted: dict[str, list[str]] = {}
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq or key not in _PS_FILTERS:
            raise UsageError(
                f"invalid filter {f!r}: expected KEY=VALUE with KEY one of {', '.join(_PS_FILTERS)}"
            )
        if key == "status" and value not in _STATUSES:
            raise UsageError(f"invalid filter 'status={value}': one of {', '.join(_STATUSES)}")
        if key == "exited" and not value.lstrip("-").isdigit():
            raise UsageError(f"invalid filter 'exited={value}': an exit code")
        wanted.setdefault(key, []).append(value)
    if not wanted:
        return containers

    def created_of(ref: str) -> str:
        client_c = next((c for c in containers if c.name == ref or c.id.startswith(ref)), None)
        if client_c is None:
            raise UsageError(f"no such container: {ref}")
        return str(client_c.record.get("created", ""))

    def matches(c: Container) -> bool:
        for key, values in wanted.items():
            if key == "id":
                ok = any(c.id.startswith(v) for v in values)
            elif key == "name":
                ok = any(re.search(v, c.name) for v in values)
            elif key == "label":
                labels = c.labels
                ok = any(
                    (k in labels and (not eq or labels[k] == v))
                    for k, eq, v in (x.partition("=") for x in values)
                )
            elif key == "status":
                shown = "paused" if c.paused else c.status
                ok = shown in values
            elif key == "exited":
                ok = c.status == "exited" and str(c.state.get("exit_code", 0)) in values
            elif key == "ancestor":
                image = str(c.record.get("image_name", ""))
                ids = (str(c.record.get("image_id", "")), str(c.record.get("image", "")))
                ok = any(
                    v in (image, image.split(":")[0]) or any(i.startswith(v) or
                    i.removeprefix("sha256:").startswith(v) for i in ids)
                    for v in values
                )  # fmt: skip
            elif key == "before":
                ok = all(str(c.record.get("created", "")) < created_of(v) for v in values)
            else:  # since
                ok = all(str(c.record.get("created", "")) > created_of(v) for v in values)
            if not ok:
                return False
        return True

    return [c for c in containers if matches(c)]


def _ps_fields(c: Container, no_trunc: bool) -> dict[str, str]:
    command = " ".join(c.record.get("command") or [])
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    labels = ",".join(f"{k}={v}" for k, v in sorted(c.labels.items()))
    return {
        "ID": c.id if no_trunc else c.id[:12],
        "Image": str(c.record.get("image_name", "")),
        "Command": f'"{command}"',
        "CreatedAt": str(c.record.get("created", "")),
        "RunningFor": human_ago(str(c.record.get("created", ""))),
        "Status": _status_text(c),
        "State": "paused" if c.paused else c.status,
        "Names": c.name,
        "Labels": labels,
        "Ports": _ports_text(c),
        "Mounts": ",".join(c.options.get("volumes") or []),
        "Networks": str(c.options.get("network", "none")),
    }


def _ports_text(c: Container) -> str:
    """Docker's PORTS column: 0.0.0.0:8080->80/tcp, from the running container's endpoint."""
    from pyrun.runtime.containers import ACTIVE

    if not (c.options.get("publish") or c.options.get("publish_all")) or c.status not in ACTIVE:
        return ""
    ports = c.attrs["NetworkSettings"]["Ports"] or {}
    return ", ".join(
        f"{b['HostIp']}:{b['HostPort']}->{key}" for key in sorted(ports) for b in ports[key]
    )


def _render_template(template: str, fields: dict[str, str]) -> str:
    import re

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in fields:
            raise UsageError(f"invalid --format: no field {name!r} (have {', '.join(fields)})")
        return fields[name]

    text = template.replace("\\t", "\t").replace("\\n", "\n")
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", sub, text)


def cmd_ps(args: argparse.Namespace) -> int:
    # Like Docker: -n/-l and a status or exited filter look at stopped containers too.
    show_all = (
        args.all
        or args.last >= 0
        or args.latest
        or any(f.startswith(("status=", "exited=")) for f in args.filter)
    )
    containers = _ps_filter(Client().containers.list(all=show_all), args.filter)
    if args.latest:
        containers = containers[:1]
    elif args.last >= 0:
        containers = containers[: args.last]
    if args.quiet:
        for c in containers:
            print(c.id if args.no_trunc else c.id[:12])
        return 0
    fmt = args.format or "table"
    if fmt == "json":
        for c in containers:
            print(json.dumps(_ps_fields(c, True)))
        return 0
    if fmt != "table" and not fmt.startswith("table "):
        for c in containers:
            print(_render_template(fmt, _ps_fields(c, args.no_trunc)))
        return 0
    if fmt.startswith("table "):
        import re

        template = fmt[len("table ") :]
        names = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", template)
        headers = {"ID": "CONTAINER ID", "CreatedAt": "CREATED AT", "RunningFor": "CREATED"}
        print(_render_template(template, {n: headers.get(n, n.upper()) for n in names}))
        for c in containers:
            print(_render_template(template, _ps_fields(c, args.no_trunc)))
        return 0
    rows = []
    for c in containers:
        f = _ps_fields(c, args.no_trunc)
        rows.append(
            [
                f["ID"],
                f["Image"],
                f["Command"],
                f["RunningFor"],
                f["Status"],
                f["Ports"],
                f["Names"],
            ]
        )
    table(rows, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    def rm(c: Container, ref: str) -> None:
        c.remove(force=args.force, v=args.volumes)
        print(ref)

    return _each(args.containers, rm)


def cmd_prune(args: argparse.Namespace) -> int:
    res = Client().containers.prune()
    if res["ContainersDeleted"]:
        print("Deleted Containers:")
        for cid in res["ContainersDeleted"]:
            print(cid)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    client = Client()
    out = []
    status = 0
    for ref in args.containers:
        try:
            out.append(client.containers.get(ref).attrs)
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    print_json(out)
    return status
