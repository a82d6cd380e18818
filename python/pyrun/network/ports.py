"""Published ports: Docker's `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]` (ranges too) and `-P`."""

from __future__ import annotations

import errno
import socket
from typing import Any

PROTOS = ("tcp", "udp")


class PortError(ValueError):
    pass


def _port_range(text: str, spec: str, what: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise PortError(
            f"invalid port specification {spec!r}: {what} {text!r} is not a port"
        ) from None
    if not (1 <= a <= 65535 and 1 <= b <= 65535) or b < a:
        raise PortError(f"invalid port specification {spec!r}: {what} {text!r} is out of range")
    return a, b


def parse_publish(spec: str) -> list[dict[str, Any]]:
    """One `-p` value -> mappings {host_ip, host_port (0 = any free), container_port, proto}."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOS:
        raise PortError(f"invalid port specification {spec!r}: protocol {proto!r} (tcp or udp)")
    host_ip = ""
    if body.startswith("["):
        raise PortError(
            f"invalid port specification {spec!r}: IPv6 host addresses are not supported"
        )
    parts = body.split(":")
    if len(parts) == 1:
        host, ctr = "", parts[0]
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 3:
        host_ip, host, ctr = parts
        if host_ip:
            try:
                socket.inet_aton(host_ip)
                if host_ip.count(".") != 3:
                    raise OSError
            except OSError:
                raise PortError(
                    f"invalid port specification {spec!r}: {host_ip!r} is not an IPv4 address"
                ) from None
        if host_ip == "0.0.0.0":
            host_ip = ""
    else:
        raise PortError(f"invalid port specification {spec!r}: too many colons")
    if not ctr:
        raise PortError(f"invalid port specification {spec!r}: no container port")
    c_lo, c_hi = _port_range(ctr, spec, "container port")
    if host:
        h_lo, h_hi = _port_range(host, spec, "host port")
        if h_hi - h_lo != c_hi - c_lo and h_lo != h_hi:
            raise PortError(
                f"invalid port specification {spec!r}: the host and container port ranges differ in size"
            )
        if h_lo == h_hi and c_hi != c_lo:
            raise PortError(
                f"invalid port specification {spec!r}: one host port for a range of container ports"
            )
    else:
        h_lo = 0
    return [
        {
            "host_ip": host_ip,
            "host_port": (h_lo + i) if h_lo else 0,
            "container_port": c_lo + i,
            "proto": proto,
        }
        for i in range(c_hi - c_lo + 1)
    ]


def exposed(image_cfg: dict[str, Any], extra: list[str]) -> list[dict[str, Any]]:
    """`-P`: every port the image EXPOSEs (and --expose), each to a free host port."""
    out = []
    for key in [*sorted(image_cfg.get("ExposedPorts") or {}), *extra]:
        port, _, proto = str(key).partition("/")
        for m in parse_publish(f"{port}/{proto or 'tcp'}"):
            out.append(m)
    return out


def _bindable(host_ip: str, port: int, proto: str) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host_ip: str, proto: str, taken: set[tuple[str, int]]) -> int:
    """A host port nothing listens on and no other container publishes (the kernel's pick)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for _ in range(64):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host_ip or "0.0.0.0", 0))
            port = int(s.getsockname()[1])
        if (proto, port) not in taken:
            return port
    raise PortError("no free host port found")


def assign(mappings: list[dict[str, Any]], in_use: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every mapping a host port, refusing one that another container publishes or a
    host process listens on (Docker's "port is already allocated")."""
    taken = {(p["proto"], int(p["host_port"])) for p in in_use}
    out: list[dict[str, Any]] = []
    for m in mappings:
        m = dict(m)
        if not m["host_port"]:
            m["host_port"] = free_port(m["host_ip"], m["proto"], taken)
        else:
            clash = any(
                p["proto"] == m["proto"]
                and int(p["host_port"]) == m["host_port"]
                and (not p.get("host_ip") or not m["host_ip"] or p["host_ip"] == m["host_ip"])
                for p in in_use + out
            )
            if clash or not _bindable(m["host_ip"], m["host_port"], m["proto"]):
                raise PortError(
                    f"Bind for {m['host_ip'] or '0.0.0.0'}:{m['host_port']} failed: "
                    "port is already allocated"
                )
        taken.add((m["proto"], m["host_port"]))
        out.append(m)
    return out


def docker_ports(ports: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """NetworkSettings.Ports / HostConfig.PortBindings shape."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in ports:
        out.setdefault(f"{p['container_port']}/{p['proto']}", []).append(
            {"HostIp": p.get("host_ip") or "0.0.0.0", "HostPort": str(p["host_port"])}
        )
    return out
