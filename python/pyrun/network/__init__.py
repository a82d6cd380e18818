"""Networks: Docker's bridge model on one host.

A network is a Linux bridge with an IPv4 subnet whose first address (the gateway) sits on the
bridge. The predefined `bridge` network (bridge `pyrun0` for the default store) is made on
first use; user networks come from `network create`. State lives in the store:

    networks/<id>/network.json          what `network inspect` shows (written atomically)
    networks/<id>/ips/<address>         one file per leased address, holding the container id;
                                        created with O_EXCL, so concurrent starts never share one
    networks/<id>/endpoints/<cid>.json  a running container's attachment (address, veth, ports)

A container's network namespace is made before its runtime starts and bind-mounted under
/run/pyrun; the runtime joins it by path. Address, veth, endpoint, firewall rules and the
namespace live exactly as long as the container runs: they are released when it exits (by the
CLI for a foreground run, through the monitor's exit hook for a detached one, by recovery after
a kill -9) and `network prune`/`system prune` release whatever a crash left behind.

Name resolution on user networks: every running container on the network gets the others'
names, aliases and short IDs in its /etc/hosts, rewritten in place whenever a container on the
network starts or stops (Docker's default bridge has no name resolution, nor does ours).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrun.errors import APIError, NotFound, PyrunError
from pyrun.store.fsutil import atomic_write_json, flocked, remove_tree

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyrun.store import Store

PREDEFINED = ("bridge", "host", "none")
# The default store's `bridge` network; other stores' default bridges and user networks take
# /24s from the pool (the first that overlaps no host route and no other pyrun network).
DEFAULT_SUBNET = "10.210.0.0/16"
POOL_START = "10.211.0.0"
POOL_SIZE = 9 * 256  # 10.211.0.0/24 ... 10.219.255.0/24
RUN_DIR = Path("/run/pyrun")


class NetworkError(APIError):
    exit_code = 1


class NetworkNotFound(NotFound):
    pass


# --- IPv4 arithmetic without ipaddress or socket (imports on the `run` path) --------------
def ip_to_int(ip: str) -> int:
    """A dotted quad of decimal octets (no inet_aton shorthands, hex or octal) -> int."""
    parts = ip.split(".")
    if len(parts) != 4 or not all(
        p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts
    ):
        raise ValueError(f"{ip!r} is not an IPv4 address")
    return int.from_bytes(bytes(int(p) for p in parts), "big")


def int_to_ip(n: int) -> str:
    return ".".join(str(b) for b in n.to_bytes(4, "big"))


def parse_subnet(text: str) -> tuple[int, int]:
    """'10.1.2.0/24' -> (network as int, prefix); the address must be the network's."""
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isdigit() or not 8 <= int(plen) <= 30:
        raise ValueError(f"invalid subnet {text!r}: expected A.B.C.D/N with N from 8 to 30")
    prefix = int(plen)
    net = ip_to_int(addr)
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    if net & ~mask & 0xFFFFFFFF:
        raise ValueError(
            f"invalid subnet {text!r}: host bits are set (did you mean "
            f"{int_to_ip(net & mask)}/{prefix}?)"
        )
    return net, prefix


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    prefix = min(a[1], b[1])
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return (a[0] & mask) == (b[0] & mask)


def host_routes() -> list[tuple[int, int, str]]:
    """IPv4 routes of the host except default ones: (network, prefix, interface)."""
    out = []
    with contextlib.suppress(OSError), open("/proc/net/route") as f:
        next(f, None)
        for line in f:
            fields = line.split()
            if len(fields) < 8:
                continue
            # The kernel's network-order words printed as host-order numbers (ntohl).
            dest = int.from_bytes(int(fields[1], 16).to_bytes(4, sys.byteorder), "big")
            mask = int.from_bytes(int(fields[7], 16).to_bytes(4, sys.byteorder), "big")
            prefix = bin(mask).count("1")
            if prefix:
                out.append((dest, prefix, fields[0]))
    return out


def mac_for(ip: str) -> bytes:
    """Docker's MAC from the address (02:42 + the four octets): a reused address keeps its
    MAC, so neighbours' ARP caches never point at a departed container."""
    return b"\x02\x42" + ip_to_int(ip).to_bytes(4, "big")


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


# --- per-store names -------------------------------------------------------------------------
def store_tag(store: Store) -> str:
    """'' for the default store, else 8 hex of its path (Store.kernel_tag): kernel-wide names
    (bridges, netns directory, firewall table) differ between stores so they never step on
    each other."""
    return store.kernel_tag


def netns_dir(store: Store) -> Path:
    tag = store_tag(store)
    return RUN_DIR / tag / "netns" if tag else RUN_DIR / "netns"


def netns_path(store: Store, cid: str) -> Path:
    return netns_dir(store) / cid


def veth_name(cid: str, index: int) -> str:
    return f"veth{cid[:10]}{index}"


class Network:
    def __init__(self, store: Store, data: dict[str, Any]) -> None:
        self.store = store
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["Id"])

    @property
    def name(self) -> str:
        return str(self.data["Name"])

    @property
    def bridge(self) -> str:
        return str(self.data["Options"]["com.docker.network.bridge.name"])

    @property
    def subnet(self) -> str:
        return str(self.data["IPAM"]["Config"][0]["Subnet"])

    @property
    def gateway(self) -> str:
        return str(self.data["IPAM"]["Config"][0]["Gateway"])

    @property
    def prefix(self) -> int:
        return int(self.subnet.partition("/")[2])

    @property
    def internal(self) -> bool:
        return bool(self.data.get("Internal"))

    @property
    def dir(self) -> Path:
        return self.store.root / "networks" / self.id

    @property
    def user_defined(self) -> bool:
        return self.name not in PREDEFINED

    def ensure_bridge(self) -> None:
        from pyrun import _core

        try:
            _core.net_ensure_bridge(self.bridge, f"{self.gateway}/{self.prefix}")
        except OSError as e:
            raise NetworkError(
                f"cannot set up bridge {self.bridge} of network {self.name}: {e.strerror or e}"
            ) from None

    # --- addresses -----------------------------------------------------------------------
    def allocate(self, cid: str, want: str | None = None) -> str:
        """Lease an address to container `cid` (`want` or the next free one)."""
        net, prefix = parse_subnet(self.subnet)
        size = 1 << (32 - prefix)
        gateway = ip_to_int(self.gateway)
        ips = self.dir / "ips"
        ips.mkdir(parents=True, exist_ok=True)
        if want is not None:
            n = ip_to_int(want)
            if not net < n < net + size - 1 or n == gateway:
                raise NetworkError(
                    f"invalid address {want} for network {self.name}: not a free host address "
                    f"of {self.subnet}"
                )
            candidates: Iterator[int] = iter([n])
        else:
            # Start after the last lease (Docker hands addresses out in order, so a freed one
            # is not reused at once), wrapping around the subnet.
            last = 0
            with contextlib.suppress(OSError, ValueError):
                last = ip_to_int((ips / ".last").read_text().strip()) - net
            order = [(last - 1 + i) % (size - 2) + 1 for i in range(1, size - 1)]
            candidates = (net + off for off in order)
        for n in candidates:
            if n == gateway:
                continue
            ip = int_to_ip(n)
            try:
                fd = os.open(ips / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._lease_stale(ip):
                    self.release_ip(ip, None)
                    try:
                        fd = os.open(ips / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    except FileExistsError:
                        continue
                else:
                    continue
            try:
                os.write(fd, cid.encode())
            finally:
                os.close(fd)
            with contextlib.suppress(OSError):
                (ips / ".last").write_text(ip)
            return ip
        if want is not None:
            raise NetworkError(f"address {want} is already in use on network {self.name}")
        raise NetworkError(f"no free address left on network {self.name} ({self.subnet})")

    def _lease_stale(self, ip: str) -> bool:
        """A lease whose container has no endpoint here and is not running (a crash between
        lease and endpoint) may be taken over."""
        try:
            holder = (self.dir / "ips" / ip).read_text().strip()
        except OSError:
            return False
        if not holder:
            return True
        if (self.dir / "endpoints" / f"{holder}.json").exists():
            return False
        return not (self.store.root / "containers" / holder).exists()

    def release_ip(self, ip: str, cid: str | None) -> None:
        path = self.dir / "ips" / ip
        with contextlib.suppress(OSError):
            if cid is None or path.read_text().strip() == cid:
                path.unlink()

    # --- endpoints -----------------------------------------------------------------------
    def endpoints(self) -> list[dict[str, Any]]:
        out = []
        d = self.dir / "endpoints"
        with contextlib.suppress(FileNotFoundError):
            for p in sorted(d.iterdir()):
                if p.suffix == ".json":
                    with contextlib.suppress(OSError, ValueError):
                        out.append(json.loads(p.read_bytes()))
        return out

    def endpoint(self, cid: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.dir / "endpoints" / f"{cid}.json").read_bytes())
        except (OSError, ValueError):
            return None
        return data

    def lock(self) -> contextlib.AbstractContextManager[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        return flocked(self.dir / "lock")

    def attrs(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(self.data))
        data["Containers"] = {
            ep["container"]: {
                "Name": ep["name"],
                "EndpointID": ep.get("endpoint_id", ""),
                "MacAddress": ep.get("mac", ""),
                "IPv4Address": f"{ep['ip']}/{self.prefix}",
                "IPv6Address": "",
            }
            for ep in self.endpoints()
        }
        return data

    def __repr__(self) -> str:
        return f"<Network: {self.id[:12]} {self.name}>"


class Networks:
    """The networks of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "networks"

    def _records(self) -> builtins.list[Network]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for d in self.root.iterdir():
                p = d / "network.json"
                with contextlib.suppress(OSError, ValueError):
                    out.append(Network(self.store, json.loads(p.read_bytes())))
        return out

    def list(self) -> builtins.list[Network]:
        nets = self._records()
        if not any(n.name == "bridge" for n in nets):
            nets.append(self.default())
        return sorted(nets, key=lambda n: (n.user_defined, n.name))

    def get(self, ref: str) -> Network:
        if ref == "bridge":
            return self.default()
        nets = self._records()
        for n in nets:
            if n.name == ref or n.id == ref:
                return n
        hits = [n for n in nets if n.id.startswith(ref)] if len(ref) >= 3 else []
        if len(hits) == 1:
            return hits[0]
        if ref in ("host", "none"):
            raise NetworkError(f"network {ref} is a mode, not a bridge network: it has no state")
        raise NetworkNotFound(f"network {ref} not found")

    def default(self) -> Network:
        """The predefined `bridge` network, made on first use."""
        for n in self._records():
            if n.name == "bridge":
                return n
        tag = store_tag(self.store)
        subnet = os.environ.get("PYRUN_BRIDGE_SUBNET") or (DEFAULT_SUBNET if not tag else None)
        return self.create(
            "bridge",
            subnet=subnet,
            bridge=f"pyr{tag}0" if tag else "pyrun0",
            _predefined=True,
        )

    def create(
        self,
        name: str,
        *,
        subnet: str | None = None,
        gateway: str | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
        driver: str = "bridge",
        bridge: str | None = None,
        check_duplicate: bool = True,
        _predefined: bool = False,
    ) -> Network:
        import re

        if driver != "bridge":
            raise NetworkError(f"network driver {driver!r} is not supported: only bridge")
        if not _predefined:
            if name in PREDEFINED:
                raise NetworkError(
                    f"network with name {name} already exists: it is a predefined network"
                )
            if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
                raise NetworkError(
                    f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )
        wanted = None
        if subnet is not None:
            try:
                wanted = parse_subnet(subnet)
            except ValueError as e:
                raise NetworkError(str(e)) from None
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        # One lock for the whole host: stores choose subnets from the same pool.
        with flocked(RUN_DIR / "ipam.lock"), flocked(self.store.root / "networks.lock"):
            existing = self._records()
            if check_duplicate and any(n.name == name for n in existing):
                if _predefined:
                    return next(n for n in existing if n.name == name)
                raise NetworkError(f"network with name {name} already exists")
            taken = [parse_subnet(n.subnet) for n in existing]
            routes = host_routes()
            if wanted is not None:
                for n in existing:
                    if overlaps(wanted, parse_subnet(n.subnet)):
                        raise NetworkError(
                            f"invalid subnet {subnet}: it overlaps with network {n.name} "
                            f"({n.subnet})"
                        )
                for net, prefix, dev in routes:
                    if overlaps(wanted, (net, prefix)):
                        raise NetworkError(
                            f"invalid subnet {subnet}: it overlaps with {int_to_ip(net)}/{prefix} "
                            f"routed to {dev} on this host"
                        )
            else:
                wanted = self._free_subnet(taken + [(n, p) for n, p, _ in routes])
            net, prefix = wanted
            if gateway is None:
                gw = int_to_ip(net + 1)
            else:
                try:
                    g = ip_to_int(gateway)
                except ValueError as e:
                    raise NetworkError(f"invalid gateway: {e}") from None
                if not net < g < net + (1 << (32 - prefix)) - 1:
                    raise NetworkError(
                        f"invalid gateway {gateway}: not a host address of {int_to_ip(net)}/{prefix}"
                    )
                gw = gateway
            import secrets

            nid = secrets.token_hex(32)
            from pyrun.store import now_rfc3339

            data = {
                "Name": name,
                "Id": nid,
                "Created": now_rfc3339(),
                "Scope": "local",
                "Driver": "bridge",
                "EnableIPv6": False,
                "IPAM": {
                    "Driver": "default",
                    "Options": {},
                    "Config": [{"Subnet": f"{int_to_ip(net)}/{prefix}", "Gateway": gw}],
                },
                "Internal": internal,
                "Attachable": False,
                "Ingress": False,
                "ConfigFrom": {"Network": ""},
                "ConfigOnly": False,
                "Options": {"com.docker.network.bridge.name": bridge or f"pyr-{nid[:11]}"},
                "Labels": labels or {},
            }
            n = Network(self.store, data)
            _remember_bridge(self.store, n.bridge)
            n.ensure_bridge()
            n.dir.mkdir(parents=True, exist_ok=True)
            (n.dir / "ips").mkdir(exist_ok=True)
            (n.dir / "endpoints").mkdir(exist_ok=True)
            atomic_write_json(n.dir / "network.json", data, pretty=True)
        from pyrun.network import firewall

        firewall.sync(self.store)
        return n

    @staticmethod
    def _free_subnet(taken: builtins.list[tuple[int, int]]) -> tuple[int, int]:
        start = ip_to_int(POOL_START)
        for i in range(POOL_SIZE):
            cand = (start + (i << 8), 24)
            if not any(overlaps(cand, t) for t in taken):
                return cand
        raise NetworkError("no free subnet left in the pool 10.211.0.0-10.219.255.0/24")

    def remove(self, ref: str) -> None:
        if ref in PREDEFINED:
            raise NetworkError(f"{ref} is a pre-defined network and cannot be removed")
        n = self.get(ref)
        active = [ep["name"] for ep in n.endpoints() if _running(self.store, ep["container"])]
        if active:
            raise NetworkError(
                f"error while removing network {n.name}: it has active endpoints "
                f"({', '.join(active)})"
            )
        from pyrun import _core

        with n.lock():
            for ep in n.endpoints():  # stale ones (their containers are gone)
                release_endpoint(self.store, n, ep)
            trash = self.store.new_temp(".network")
            os.rename(n.dir, trash)
        with contextlib.suppress(OSError):
            _core.net_delete_link(n.bridge)
        from pyrun.network import firewall

        firewall.sync(self.store)
        remove_tree(trash)

    def prune(self) -> builtins.list[str]:
        """Remove user networks no container uses (running or configured)."""
        used: set[str] = set()
        from pyrun.runtime.containers import list_containers

        for c in list_containers(self.store):
            used.update(container_networks(c.options, c.record))
        recover(self.store)
        removed = []
        for n in self._records():
            if n.user_defined and n.name not in used and n.id not in used:
                try:
                    self.remove(n.id)
                except PyrunError:
                    continue
                removed.append(n.name)
        return removed


def _running(store: Store, cid: str) -> bool:
    from pyrun.runtime.containers import ACTIVE, Container

    c = Container(store, cid)
    try:
        return c.status in ACTIVE
    except PyrunError:
        return False


def container_networks(options: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The bridge networks a container is configured for: its --network, then those
    `network connect` added."""
    mode = str(options.get("network") or "bridge")
    nets = []
    own = mode not in ("host", "none") and not mode.startswith("container:")
    if own and not record.get("primary_disconnected"):
        nets.append(mode)
    nets += [str(n) for n in record.get("networks_extra") or []]
    return nets


def release_endpoint(
    store: Store, n: Network, ep: dict[str, Any], *, delete_veth: bool = True
) -> None:
    """Undo one attachment: veth, lease, endpoint record (the caller holds the network lock).
    `delete_veth=False` when the namespace is about to go: the kernel then removes the pair
    with it, in its own batch, instead of the ~10 ms a synchronous RTM_DELLINK of a veth
    costs (it waits for RCU grace periods)."""
    from pyrun import _core

    if delete_veth:
        with contextlib.suppress(OSError):
            _core.net_delete_link(ep["veth"])
    n.release_ip(ep["ip"], ep["container"])
    with contextlib.suppress(FileNotFoundError):
        (n.dir / "endpoints" / f"{ep['container']}.json").unlink()


def _kernel_dir(store: Store) -> Path:
    """/run/pyrun/<tag> (default: /run/pyrun/default): what the store put in the kernel."""
    return RUN_DIR / (store_tag(store) or "default")


def _remember_bridge(store: Store, bridge: str) -> None:
    """Note the store's root and bridges under /run/pyrun, so that what a deleted store left
    in the kernel can still be found (purge_orphans)."""
    d = _kernel_dir(store)
    d.mkdir(parents=True, exist_ok=True)
    (d / "root").write_text(os.path.realpath(store.root))
    with open(d / "bridges", "a") as f:
        f.write(bridge + "\n")


def purge_orphans() -> list[str]:
    """Clean up after stores that were deleted with their networks still set up (a test's
    temporary store, `rm -rf` of a --root): their bridges, namespaces and firewall rules.
    Returns the roots cleaned up."""
    import shutil

    from pyrun import _core
    from pyrun.network import firewall

    cleaned: builtins.list[str] = []
    if not RUN_DIR.is_dir():
        return cleaned
    for d in RUN_DIR.iterdir():
        try:
            root = (d / "root").read_text().strip()
        except OSError:
            continue
        if not root or os.path.isdir(os.path.join(root, "networks")):
            continue
        tag = "" if d.name == "default" else d.name
        with contextlib.suppress(OSError):
            for bridge in set((d / "bridges").read_text().split()):
                with contextlib.suppress(OSError):
                    _core.net_delete_link(bridge)
        with contextlib.suppress(Exception):
            firewall.remove_tag(tag)
        ns = (RUN_DIR / tag / "netns") if tag else (RUN_DIR / "netns")
        if ns.is_dir():
            for p in ns.iterdir():
                with contextlib.suppress(OSError):
                    _core.net_delete_netns(str(p))
            with contextlib.suppress(OSError):
                _core.unmount(str(ns), detach=True)
        shutil.rmtree(d, ignore_errors=True)
        cleaned.append(root)
    return cleaned


def purge(store: Store) -> None:
    """Take every network of the store off the host: endpoints, bridges (the default one too),
    firewall rules, the namespace directory. For a store that is going away (tests, `system
    reset`); the records go too."""
    from pyrun import _core
    from pyrun.network import firewall

    nets = Networks(store)
    for n in nets._records():
        with n.lock():
            for ep in n.endpoints():
                release_endpoint(store, n, ep)
        with contextlib.suppress(OSError):
            _core.net_delete_link(n.bridge)
        trash = store.new_temp(".network")
        with contextlib.suppress(OSError):
            os.rename(n.dir, trash)
            remove_tree(trash)
    with contextlib.suppress(Exception):
        firewall.remove_all(store)
    d = netns_dir(store)
    if d.is_dir():
        for p in d.iterdir():
            with contextlib.suppress(OSError):
                _core.net_delete_netns(str(p))
        with contextlib.suppress(OSError):
            _core.unmount(str(d), detach=True)
    import shutil

    shutil.rmtree(_kernel_dir(store), ignore_errors=True)


def recover(store: Store) -> list[str]:
    """Release what crashes left: endpoints and leases of containers that are not running,
    their veths and namespace files, then re-apply the firewall rules. Returns the container
    ids released (`system prune`, `network prune`)."""
    from pyrun import _core
    from pyrun.network import firewall
    from pyrun.network.attach import release

    released: set[str] = set()
    for n in Networks(store)._records():
        for ep in n.endpoints():
            if not _running(store, ep["container"]):
                released.add(ep["container"])
        for lease in (n.dir / "ips").glob("*"):
            if lease.name != ".last" and n._lease_stale(lease.name):
                n.release_ip(lease.name, None)
    d = netns_dir(store)
    if d.is_dir():
        for p in d.iterdir():
            if not _running(store, p.name):
                released.add(p.name)
    cdir = store.root / "containers"
    if cdir.is_dir():
        links = set(os.listdir("/sys/class/net"))
        for c in cdir.iterdir():
            if any(x.startswith(f"veth{c.name[:10]}") for x in links) and not _running(
                store, c.name
            ):
                released.add(c.name)
                for x in links:
                    if x.startswith(f"veth{c.name[:10]}"):
                        with contextlib.suppress(OSError):
                            _core.net_delete_link(x)
    for cid in released:
        release(store, cid)
    firewall.flush(store)
    with contextlib.suppress(Exception):
        firewall.sync(store)
    return sorted(released)
