"""A container's network while it runs: made before its runtime starts, released when it exits.

`setup` returns what the runtime config needs (the network namespace to join and the
/etc/hosts, /etc/resolv.conf and /etc/hostname bind mounts); on any failure it undoes what it
did. `release` is idempotent and safe to run from any process (the CLI, the monitor's exit
hook, recovery, prune).
"""

from __future__ import annotations

import contextlib
import os
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
from pyrun.runtime.etcfiles import (
    HOSTS_HEADER,
    etc_mounts,
    parse_add_host,
    resolv_conf,
    write_in_place,
)
from pyrun.store.fsutil import atomic_write_json, flocked

if TYPE_CHECKING:
    from pyrun.store import Store


def write_hosts(store: Store, cid: str) -> None:
    """/etc/hosts of a running container: its own lines, then its peers on user networks."""
    cdir = store.run_root / cid
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
        write_in_place(cdir / "hosts", base + "".join(peers))


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
    "hostname": str}. Everything is undone when it fails. The /etc files go into the
    container's runtime directory (Store.run_root)."""
    cdir = store.run_root / cid
    mode = str(options.get("network") or "bridge")
    dns = list(options.get("dns") or [])
    search = list(options.get("dns_search") or [])
    dns_opts = list(options.get("dns_option") or [])
    try:
        extra_hosts = [parse_add_host(h) for h in options.get("extra_hosts") or []]
    except ValueError as e:
        raise NetworkError(str(e)) from None

    if mode.startswith("container:"):
        other_id, pid = _running_pid(store, mode.partition(":")[2])
        odir = store.run_root / other_id
        mounts = [{**m, "source": str(odir / Path(m["source"]).name)} for m in etc_mounts(cdir)]
        if not all(Path(m["source"]).exists() for m in mounts):
            mounts = []
        return {
            "namespace": {"type": "network", "path": f"/proc/{pid}/ns/net"},
            "mounts": mounts,
            "hostname": hostname,
        }

    host_mode = mode == "host"
    if host_mode and not options.get("hostname"):
        hostname = os.uname().nodename
    lines: list[str] = []
    result: dict[str, Any] = {"namespace": None, "mounts": etc_mounts(cdir), "hostname": hostname}
    try:
        if mode == "none":
            result["namespace"] = {"type": "network"}
        elif not host_mode:
            result["namespace"] = {"type": "network", "path": str(netns_path(store, cid))}
            lines = _attach_bridges(store, cid, name, options, record, image_cfg, hostname)
        gateway = (
            _primary_gateway(store, cid, options, record)
            if any(ip == "host-gateway" for _, ip in extra_hosts)
            else ""
        )
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
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "hosts.base").write_text(base)
        write_in_place(cdir / "hosts", base)
        write_hosts(store, cid)
        write_in_place(cdir / "hostname", hostname + "\n")
        write_in_place(
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
    primary = str(c.options.get("network") or "bridge")
    if record.get("primary_disconnected") and Networks(store).get(primary).id == n.id:
        record.pop("primary_disconnected")  # back on its own --network
    else:
        record.setdefault("networks_extra", []).append(n.name)
    if aliases:
        record.setdefault("network_aliases_extra", {})[n.name] = list(aliases)
    if ip:
        record.setdefault("networks_ip", {})[n.name] = ip
    if c.status in ACTIVE and c.pid:
        used = {
            ep["ifname"] for x in Networks(store)._records() if (ep := x.endpoint(c.id)) is not None
        }
        index = next(i for i in range(len(used) + 1) if f"eth{i}" not in used)
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
        # Its --network: the container keeps a namespace of its own, without that bridge.
        record["primary_disconnected"] = True
    c.save()
