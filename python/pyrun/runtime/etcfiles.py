"""The files every container gets in /etc: hosts, resolv.conf and hostname, written in the
container's directory and bind-mounted (as Docker does). Kept free of heavy imports: `run
--network none|host` uses only this, not the network package."""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class AddHostError(ValueError):
    pass


HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def etc_mounts(cdir: Path) -> list[dict[str, Any]]:
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
        raise AddHostError(f'invalid argument "{spec}" for "--add-host": expected HOST:IP')
    if ip != "host-gateway":
        import socket

        try:
            socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
        except OSError:
            raise AddHostError(
                f'invalid argument "{spec}" for "--add-host": {ip!r} is not an IP address'
            ) from None
    return name, ip


def write_in_place(path: Path, text: str) -> None:
    """Rewrite a file that is bind-mounted into a container: same inode (a rename would leave
    the container with the old file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def setup_shared(
    cdir: Path,
    options: dict[str, Any],
    hostname: str,
    *,
    host_mode: bool,
    gateway: Any = None,
) -> list[dict[str, Any]]:
    """The files of a container that has no bridge (`--network none` or `host`); returns the
    bind mounts. `gateway()` gives the address `host-gateway` stands for, when one is used."""
    extra_hosts = [parse_add_host(h) for h in options.get("extra_hosts") or []]
    gw = (
        gateway()
        if gateway is not None and any(ip == "host-gateway" for _, ip in extra_hosts)
        else ""
    )
    extra = "".join(f"{gw if ip == 'host-gateway' else ip}\t{h}\n" for h, ip in extra_hosts)
    if host_mode:
        try:
            base = Path("/etc/hosts").read_text()
        except OSError:
            base = HOSTS_HEADER
    else:
        base = HOSTS_HEADER
    base += extra
    # No hosts.base: it is what network/attach.py rebuilds a bridge container's hosts from
    # when peers come and go, and a container without a bridge is never connected to one.
    write_in_place(cdir / "hosts", base)
    write_in_place(cdir / "hostname", hostname + "\n")
    write_in_place(
        cdir / "resolv.conf",
        resolv_conf(
            list(options.get("dns") or []),
            list(options.get("dns_search") or []),
            list(options.get("dns_option") or []),
            host_mode=host_mode,
        ),
    )
    return etc_mounts(cdir)
