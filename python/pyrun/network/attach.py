"""A container's network while it runs: made before its runtime starts, released when it exits.

`setup` returns what the runtime config needs (the network namespace to join and the
/etc/hosts, /etc/resolv.conf and /etc/hostname bind mounts); on any failure it undoes what it
did. `release` is idempotent and safe to run from any process (the CLI, the monitor's exit
hook, recovery, prune).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrun.network import (
    Network,
    NetworkError,
    Networks,
    container_networks,
    mac_for,
    mac_text,
    netns_path,
    release_endpoint,
    veth_name,
)
from pyrun.store.fsutil import atomic_write_json, flocked

if TYPE_CHECKING:
    from pyrun.store import Store

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def _etc_mounts(cdir: Path) -> list[dict[str, Any]]:
    return [
        {
            "destination": f"/etc/{name}",
            "type": "bind",
            "source": str(cdir / name),
            "options": ["rbind", "rprivate"],
        }
        for name in ("resolv.conf", "hostname", "hosts")
    ]


def resolv_conf(dns: list[str], search: list[str], options: list[str], *, host_mode: bool) -> str:
    """The host's resolv.conf with loopback nameservers dropped (they are unreachable from a
    container's namespace; Google's as Docker's fallback), then --dns/--dns-search/--dns-option."""
    try:
        host = Path("/etc/resolv.conf").read_text()
    except OSError:
        host = ""
    if host_mode and not (dns or search or options):
        return host
    servers, searches, opts = [], [], []
    for line in host.splitlines():
        f = line.split()
        if not f or f[0].startswith(("#", ";")):
            continue
        if f[0] == "nameserver" and len(f) > 1:
            if host_mode or not (f[1].startswith("127.") or f[1] == "::1"):
                servers.append(f[1])
        elif f[0] in ("search", "domain"):
            searches = f[1:]
        elif f[0] == "options":
            opts += f[1:]
    if dns:
        servers = list(dns)
    elif not servers:
        servers = list(FALLBACK_DNS)
    if search:
        searches = [] if search == ["."] else list(search)
    if options:
        opts = list(options)
    out = [f"nameserver {s}" for s in servers]
    if searches:
        out.append("search " + " ".join(searches))
    if opts:
        out.append("options " + " ".join(opts))
    return "\n".join(out) + "\n"


def parse_add_host(spec: str) -> tuple[str, str]:
    name, sep, ip = spec.partition(":") if spec.count(":") == 1 else spec.partition("=")
    if not sep or not name or not ip:
        raise NetworkError(f'invalid argument "{spec}" for "--add-host": expected HOST:IP')
    if ip != "host-gateway":
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        except OSError:
            raise NetworkError(
                f'invalid argument "{spec}" for "--add-host": {ip!r} is not an IP address'
            ) from None
    return name, ip


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite a file that is bind-mounted into a container: same inode (a rename would leave
    the container with the old file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def write_hosts(store: Store, cid: str) -> None:
    """/etc/hosts of a running container: its own lines, then its peers on user networks."""
    cdir = store.root / "containers" / cid
    try:
        base = (cdir / "hosts.base").read_text()
    except OSError:
        return
    peers = []
    for n in Networks(store)._records():
        if not n.user_defined or n.endpoint(cid) is None:
            continue
        for ep in n.endpoints():
            if ep["container"] != cid:
                names = [ep["name"], *ep.get("aliases", []), ep["container"][:12]]
                peers.append(f"{ep['ip']}\t{' '.join(dict.fromkeys(names))}\n")
    with contextlib.suppress(FileNotFoundError):
        _write_in_place(cdir / "hosts", base + "".join(peers))


def _refresh_peers(store: Store, n: Network, skip: str) -> None:
    if not n.user_defined:
        return
    for ep in n.endpoints():
        if ep["container"] != skip:
            write_hosts(store, ep["container"])


def _running_pid(store: Store, ref: str) -> tuple[str, int]:
    from pyrun.runtime.containers import ACTIVE, get_container

    other = get_container(store, ref)
    pid = other.pid
    if other.status not in ACTIVE or not pid:
        raise NetworkError(f"cannot join the network of container {other.name}: it is not running")
    return other.id, int(pid)


def setup(
    store: Store,
    cid: str,
    name: str,
    options: dict[str, Any],
    record: dict[str, Any],
    image_cfg: dict[str, Any],
    hostname: str,
) -> dict[str, Any]:
    """Make the container's network; returns {"namespace": {...} or None, "mounts": [...],
    "hostname": str}. Everything is undone when it fails."""
    cdir = store.root / "containers" / cid
    mode = str(options.get("network") or "bridge")
    dns = list(options.get("dns") or [])
    search = list(options.get("dns_search") or [])
    dns_opts = list(options.get("dns_option") or [])
    extra_hosts = [parse_add_host(h) for h in options.get("extra_hosts") or []]

    if mode.startswith("container:"):
        other_id, pid = _running_pid(store, mode.partition(":")[2])
        odir = store.root / "containers" / other_id
        mounts = [{**m, "source": str(odir / Path(m["source"]).name)} for m in _etc_mounts(cdir)]
        if not all(Path(m["source"]).exists() for m in mounts):
            mounts = []
        return {
            "namespace": {"type": "network", "path": f"/proc/{pid}/ns/net"},
            "mounts": mounts,
            "hostname": hostname,
        }

    host_mode = mode == "host"
    if host_mode and not options.get("hostname"):
        hostname = socket.gethostname()
    lines: list[str] = []
    result: dict[str, Any] = {"namespace": None, "mounts": _etc_mounts(cdir), "hostname": hostname}
    try:
        if mode == "none":
            result["namespace"] = {"type": "network"}
        elif not host_mode:
            result["namespace"] = {"type": "network", "path": str(netns_path(store, cid))}
            lines = _attach_bridges(store, cid, name, options, record, image_cfg, hostname)
        gateway = _primary_gateway(store, cid, options, record)
        extra = "".join(
            f"{gateway if ip == 'host-gateway' else ip}\t{h}\n" for h, ip in extra_hosts
        )
        if host_mode:
            try:
                base = Path("/etc/hosts").read_text()
            except OSError:
                base = HOSTS_HEADER
            base += extra
        else:
            base = HOSTS_HEADER + extra + "".join(lines)
        (cdir / "hosts.base").write_text(base)
        _write_in_place(cdir / "hosts", base)
        write_hosts(store, cid)
        _write_in_place(cdir / "hostname", hostname + "\n")
        _write_in_place(
            cdir / "resolv.conf", resolv_conf(dns, search, dns_opts, host_mode=host_mode)
        )
    except BaseException:
        release(store, cid)
        raise
    return result


def _primary_gateway(
    store: Store, cid: str, options: dict[str, Any], record: dict[str, Any]
) -> str:
    nets = container_networks(options, record)
    if nets:
        n = Networks(store).get(nets[0])
        return n.gateway
    # host-gateway without a bridge: the default network's gateway is where the host answers.
    return Networks(store).default().gateway


def _attach_bridges(
    store: Store,
    cid: str,
    name: str,
    options: dict[str, Any],
    record: dict[str, Any],
    image_cfg: dict[str, Any],
    hostname: str,
) -> list[str]:
    from pyrun import _core
    from pyrun.network import firewall
    from pyrun.network.ports import PortError, assign, exposed, parse_publish

    ns = netns_path(store, cid)
    try:
        _core.net_create_netns(str(ns))
    except OSError as e:
        raise NetworkError(f"cannot create the network namespace: {e.strerror or e}") from None
    networks = Networks(store)
    names = container_networks(options, record)
    aliases_extra: dict[str, list[str]] = record.get("network_aliases_extra") or {}
    lines = []
    published = False
    for index, ref in enumerate(names):
        n = networks.get(ref)
        n.ensure_bridge()
        want = options.get("ip") if index == 0 else (record.get("networks_ip") or {}).get(ref)
        aliases = list(options.get("network_aliases") or []) if index == 0 else []
        aliases += aliases_extra.get(ref, [])
        if aliases and not n.user_defined:
            raise NetworkError(
                "network-scoped aliases are only supported for user-defined networks"
            )
        with n.lock():
            ip = n.allocate(cid, want)
            veth = veth_name(cid, index)
            mac = mac_for(ip)
            endpoint: dict[str, Any] = {
                "container": cid,
                "name": name,
                "aliases": aliases,
                "ip": ip,
                "mac": mac_text(mac),
                "veth": veth,
                "ifname": f"eth{index}",
                "gateway": n.gateway,
                "prefix": n.prefix,
                "endpoint_id": os.urandom(32).hex(),
                "ports": [],
            }
            try:
                _core.net_delete_link(veth)  # a leftover of a crash, if any
                _core.net_attach_veth(
                    str(ns),
                    f"eth{index}",
                    veth,
                    n.bridge,
                    f"{ip}/{n.prefix}",
                    gateway=None if (index or n.internal) else n.gateway,
                    mac=mac,
                )
            except OSError as e:
                n.release_ip(ip, cid)
                raise NetworkError(
                    f"cannot attach to network {n.name}: {e.strerror or e}"
                ) from None
            if index == 0:
                try:
                    wanted = [
                        m for spec in options.get("publish") or [] for m in parse_publish(spec)
                    ]
                    if options.get("publish_all"):
                        wanted += exposed(image_cfg, [])
                    if wanted:
                        with flocked(store.root / "ports.lock"):
                            in_use = [
                                p for other in networks._records() for e in other.endpoints()
                                for p in e.get("ports") or [] if e["container"] != cid
                            ]  # fmt: skip
                            endpoint["ports"] = assign(wanted, in_use)
                            atomic_write_json(
                                n.dir / "endpoints" / f"{cid}.json", endpoint, durable=False
                            )
                        published = True
                except PortError as e:
                    release_endpoint(store, n, endpoint)
                    raise NetworkError(str(e)) from None
            if not endpoint["ports"]:
                atomic_write_json(n.dir / "endpoints" / f"{cid}.json", endpoint, durable=False)
            lines.append(f"{ip}\t{hostname}\n")
        _refresh_peers(store, n, cid)
    if published:
        firewall.sync(store)
    return lines[:1]


def release(store: Store, cid: str) -> None:
    """Undo `setup`: endpoints (veths, leases, published ports), peers' hosts, the namespace."""
    from pyrun import _core
    from pyrun.network import firewall

    had_ports = False
    nets_dir = store.root / "networks"
    # Our own namespace goes below, and its veths with it (asynchronously, in the kernel);
    # without one (a crash lost it) they are deleted one by one.
    own_ns = os.path.ismount(netns_path(store, cid))
    if nets_dir.is_dir():
        for n in Networks(store)._records():
            ep = n.endpoint(cid)
            if ep is None:
                continue
            had_ports = had_ports or bool(ep.get("ports"))
            with n.lock():
                release_endpoint(store, n, ep, delete_veth=not own_ns)
            _refresh_peers(store, n, cid)
    if had_ports:
        with contextlib.suppress(Exception):
            firewall.sync(store)
    with contextlib.suppress(OSError):
        _core.net_delete_netns(str(netns_path(store, cid)))


def main(argv: list[str] | None = None) -> int:
    """`python -m pyrun.network.attach release ROOT CID`: the monitor's exit hook."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "release":
        print(
            "usage: python -m pyrun.network.attach release STORE_ROOT CONTAINER_ID", file=sys.stderr
        )
        return 2
    from pyrun.store import Store

    release(Store(args[1]), args[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def connect(
    store: Store, c: Any, ref: str, *, aliases: list[str] | None = None, ip: str | None = None
) -> None:
    """`network connect`: add network `ref` to container `c` (a running one is attached now,
    as its next interface; a stopped one at its next start)."""
    from pyrun import _core
    from pyrun.runtime.containers import ACTIVE

    n = Networks(store).get(ref)
    mode = str(c.options.get("network") or "bridge")
    if mode in ("host", "none") or mode.startswith("container:"):
        raise NetworkError(
            f"container {c.name} uses the {mode.partition(':')[0]} network mode: it cannot be "
            "connected to a network"
        )
    current = container_networks(c.options, c.record)
    resolved = [Networks(store).get(x).id for x in current]
    if n.id in resolved:
        raise NetworkError(f"container {c.name} is already connected to network {n.name}")
    if aliases and not n.user_defined:
        raise NetworkError("network-scoped aliases are only supported for user-defined networks")
    record = c.record
    record.setdefault("networks_extra", []).append(n.name)
    if aliases:
        record.setdefault("network_aliases_extra", {})[n.name] = list(aliases)
    if ip:
        record.setdefault("networks_ip", {})[n.name] = ip
    if c.status in ACTIVE and c.pid:
        index = len(current)
        ns = netns_path(store, c.id)
        n.ensure_bridge()
        with n.lock():
            addr = n.allocate(c.id, ip)
            veth = veth_name(c.id, index)
            mac = mac_for(addr)
            try:
                _core.net_delete_link(veth)
                _core.net_attach_veth(
                    str(ns), f"eth{index}", veth, n.bridge, f"{addr}/{n.prefix}", mac=mac
                )
            except OSError as e:
                n.release_ip(addr, c.id)
                raise NetworkError(
                    f"cannot attach to network {n.name}: {e.strerror or e}"
                ) from None
            atomic_write_json(
                n.dir / "endpoints" / f"{c.id}.json",
                {
                    "container": c.id,
                    "name": c.name,
                    "aliases": list(aliases or []),
                    "ip": addr,
                    "mac": mac_text(mac),
                    "veth": veth,
                    "ifname": f"eth{index}",
                    "gateway": n.gateway,
                    "prefix": n.prefix,
                    "endpoint_id": os.urandom(32).hex(),
                    "ports": [],
                },
                durable=False,
            )
        _refresh_peers(store, n, c.id)
        write_hosts(store, c.id)
    c.save()


def disconnect(store: Store, c: Any, ref: str) -> None:
    """`network disconnect`: the reverse of connect (also for the container's --network)."""
    n = Networks(store).get(ref)
    current = container_networks(c.options, c.record)
    names = {Networks(store).get(x).id: x for x in current}
    if n.id not in names:
        raise NetworkError(f"container {c.name} is not connected to network {n.name}")
    ep = n.endpoint(c.id)
    if ep is not None:
        with n.lock():
            release_endpoint(store, n, ep)
        _refresh_peers(store, n, c.id)
        write_hosts(store, c.id)
        if ep.get("ports"):
            from pyrun.network import firewall

            firewall.sync(store)
    label = names[n.id]
    record = c.record
    extra = record.get("networks_extra") or []
    if label in extra:
        extra.remove(label)
        (record.get("network_aliases_extra") or {}).pop(label, None)
        (record.get("networks_ip") or {}).pop(label, None)
    else:
        # Its --network: the container keeps a namespace of its own but no bridge (none).
        record["options"]["network"] = "none"
    c.save()
