"""Firewall rules of a store's networks: outbound NAT, published ports, isolation.

The rules are a pure function of the store's state (its networks and the published ports of
its running containers' endpoints), so `sync` renders them all and replaces the old set in one
atomic transaction: nothing half-applied, nothing left behind by a container that is gone.

- nftables (`nft -f -`): a table of the store's own (`ip pyrun`, `ip pyrun_<tag>` for other
  stores) with NAT (masquerade out of each non-internal network, DNAT of published ports from
  outside, from the host itself including 127.0.0.1, and hairpin from containers) and a forward
  filter (different networks cannot reach each other; internal networks reach nothing outside);
- where `nft` is absent, the same rules through `iptables-restore` in chains of the store's own;
- where the iptables `filter` table has a FORWARD chain (the Docker engine sets its policy to
  DROP), a chain of the store's own jumped to from FORWARD accepts the networks' traffic, the
  way Docker's DOCKER-USER chain is meant to be used, so pyrun works next to Docker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import TYPE_CHECKING, Any

from pyrun.errors import APIError
from pyrun.store.fsutil import flocked

if TYPE_CHECKING:
    import subprocess

    from pyrun.network import Network
    from pyrun.store import Store


class FirewallError(APIError):
    """The rules could not be applied (the message says which tool said what)."""


def _names(store: Store) -> tuple[str, str]:
    from pyrun.network import store_tag

    return names_for(store_tag(store))


def names_for(tag: str) -> tuple[str, str]:
    """(nft table, iptables chain) of the store with this tag."""
    return (f"pyrun_{tag}" if tag else "pyrun"), (f"PYRUN-{tag}" if tag else "PYRUN-FORWARD")


def _ports(nets: list[Network]) -> list[tuple[Network, dict[str, Any], dict[str, Any]]]:
    return [(n, ep, p) for n in nets for ep in n.endpoints() for p in ep.get("ports") or []]


def render_nft(store: Store, nets: list[Network]) -> str:
    table, _ = _names(store)
    lines = [f"table ip {table}", f"delete table ip {table}"]
    if not nets:
        return "\n".join(lines) + "\n"
    lines += [
        f"table ip {table} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump ports",
        "  }",
        "  chain ports {",
    ]
    for _n, ep, p in _ports(nets):
        match = f"ip daddr {p['host_ip']} " if p.get("host_ip") else ""
        lines.append(
            f"    {match}{p['proto']} dport {p['host_port']} dnat to {ep['ip']}:{p['container_port']}"
            f' comment "{ep["container"][:12]}"'
        )
    lines += [
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    for n in nets:
        br = n.bridge
        if not n.internal:
            lines.append(f'    ip saddr {n.subnet} oifname != "{br}" masquerade')
        # Hairpin (a container to a published port of the host) and the host's 127.0.0.1.
        lines.append(f'    oifname "{br}" ip saddr {n.subnet} ct status dnat masquerade')
        lines.append(f'    oifname "{br}" ip saddr 127.0.0.0/8 masquerade')
    lines += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    for n in nets:
        br = n.bridge
        if n.internal:
            lines.append(f'    iifname "{br}" oifname != "{br}" drop')
            lines.append(f'    oifname "{br}" iifname != "{br}" drop')
        else:
            # No network reaches another (every pyrun bridge is named pyr*).
            lines.append(f'    iifname "{br}" oifname != "{br}" oifname "pyr*" drop')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def render_iptables_forward(store: Store, nets: list[Network], *, isolate: bool) -> str:
    """The FORWARD chain of the store: accept its networks' traffic (beside a DROP policy), and
    with `isolate` (no nft table doing it) first drop what crosses between networks or leaves
    an internal one."""
    _, chain = _names(store)
    lines = ["*filter", f":{chain} - [0:0]"]
    if isolate:
        for n in nets:
            if n.internal:
                lines.append(f"-A {chain} -i {n.bridge} ! -o {n.bridge} -j DROP")
                lines.append(f"-A {chain} -o {n.bridge} ! -i {n.bridge} -j DROP")
            else:
                for m in nets:
                    if m.bridge != n.bridge:
                        lines.append(f"-A {chain} -i {n.bridge} -o {m.bridge} -j DROP")
    for n in nets:
        lines.append(f"-A {chain} -i {n.bridge} -j ACCEPT")
        lines.append(
            f"-A {chain} -o {n.bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_iptables_nat(store: Store, nets: list[Network]) -> str:
    """The nft table's NAT as iptables rules (where nft is absent)."""
    _, chain = _names(store)
    pre, post = f"{chain[:20]}-DNAT", f"{chain[:20]}-SNAT"
    nat = ["*nat", f":{pre} - [0:0]", f":{post} - [0:0]"]
    for _n, ep, p in _ports(nets):
        dst = f"-d {p['host_ip']} " if p.get("host_ip") else ""
        nat.append(
            f"-A {pre} {dst}-p {p['proto']} --dport {p['host_port']} "
            f"-j DNAT --to-destination {ep['ip']}:{p['container_port']}"
        )
    for n in nets:
        if not n.internal:
            nat.append(f"-A {post} -s {n.subnet} ! -o {n.bridge} -j MASQUERADE")
        nat.append(
            f"-A {post} -s {n.subnet} -o {n.bridge} -m conntrack --ctstate DNAT -j MASQUERADE"
        )
        nat.append(f"-A {post} -s 127.0.0.0/8 -o {n.bridge} -j MASQUERADE")
    nat.append("COMMIT")
    return "\n".join(nat) + "\n"


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    import subprocess  # lazily: a `run` whose rules did not change never calls nft

    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _ensure_jump(table: str, parent: str, chain: str, present: bool, extra: list[str]) -> None:
    rule = [*extra, "-j", chain]
    there = _run(["iptables", "-t", table, "-C", parent, *rule]).returncode == 0
    if present and not there:
        r = _run(["iptables", "-t", table, "-I", parent, "1", *rule])
        if r.returncode:
            raise FirewallError(f"iptables -I {parent}: {r.stderr.strip()}")
    elif not present and there:
        _run(["iptables", "-t", table, "-D", parent, *rule])


def _drop_chain(table: str, chain: str) -> None:
    _run(["iptables", "-t", table, "-F", chain])
    _run(["iptables", "-t", table, "-X", chain])


def sync(store: Store) -> None:
    """Make the kernel's rules match the store's networks and published ports."""
    from pyrun.network import RUN_DIR, Networks, store_tag

    tag = store_tag(store)
    cache = RUN_DIR / (tag or "default")
    cache.mkdir(parents=True, exist_ok=True)
    with flocked(cache / "firewall.lock"):
        nets = Networks(store)._records()
        # PYRUN_FIREWALL=iptables picks the iptables rules even where nft is installed.
        backend = os.environ.get("PYRUN_FIREWALL", "")
        have_nft = shutil.which("nft") is not None and backend != "iptables"
        have_ipt = shutil.which("iptables") is not None
        if not have_nft and not have_ipt:
            if nets:
                raise FirewallError("neither nft nor iptables is installed: no NAT for networks")
            return
        _, chain = _names(store)
        # Re-applying an unchanged rule set is skipped (the cache lives in /run, so a reboot,
        # which loses the rules, loses it too).
        if have_nft:
            script = render_nft(store, nets)
            if _changed(cache / "nft.applied", script):
                r = _run(["nft", "-f", "-"], script)
                if r.returncode:
                    raise FirewallError("nft: " + (r.stderr.strip().splitlines() or ["failed"])[-1])
                _remember(cache / "nft.applied", script)
        else:
            rules = render_iptables_nat(store, nets)
            if _changed(cache / "ipt-nat.applied", rules):
                r = _run(["iptables-restore", "--noflush"], rules)
                if r.returncode:
                    raise FirewallError(f"iptables-restore: {r.stderr.strip()}")
                pre, post = f"{chain[:20]}-DNAT", f"{chain[:20]}-SNAT"
                local = ["-m", "addrtype", "--dst-type", "LOCAL"]
                _ensure_jump("nat", "PREROUTING", pre, bool(nets), local)
                _ensure_jump("nat", "OUTPUT", pre, bool(nets), local)
                _ensure_jump("nat", "POSTROUTING", post, bool(nets), [])
                if not nets:
                    for t, c in (("nat", pre), ("nat", post)):
                        _drop_chain(t, c)
                _remember(cache / "ipt-nat.applied", rules)
        if have_ipt:
            rules = render_iptables_forward(store, nets, isolate=not have_nft)
            if _changed(cache / "ipt-fwd.applied", rules):
                if nets:
                    r = _run(["iptables-restore", "--noflush"], rules)
                    if r.returncode:
                        raise FirewallError(f"iptables-restore: {r.stderr.strip()}")
                    _ensure_jump("filter", "FORWARD", chain, True, [])
                else:
                    _ensure_jump("filter", "FORWARD", chain, False, [])
                    _drop_chain("filter", chain)
                _remember(cache / "ipt-fwd.applied", rules)


def _changed(path: Any, text: str) -> bool:
    try:
        return bool(path.read_text() != text)
    except OSError:
        return True


def _remember(path: Any, text: str) -> None:
    with contextlib.suppress(OSError):
        path.write_text(text)


def flush(store: Store) -> None:
    """Forget what was applied, so that the next `sync` applies the whole set again (after a
    crash, or when someone else changed the rules: `system prune`)."""
    from pyrun.network import RUN_DIR, store_tag

    cache = RUN_DIR / (store_tag(store) or "default")
    for name in ("nft.applied", "ipt-nat.applied", "ipt-fwd.applied"):
        with contextlib.suppress(OSError):
            (cache / name).unlink()


def remove_all(store: Store) -> None:
    """Take every rule of the store off the kernel, whichever backend made it (the store and
    its networks are going away)."""
    from pyrun.network import store_tag

    remove_tag(store_tag(store))
    flush(store)


def remove_tag(tag: str) -> None:
    """remove_all for the store with this tag (which may be gone)."""
    table, chain = names_for(tag)
    if shutil.which("nft") is not None:
        _run(["nft", "delete", "table", "ip", table])
    if shutil.which("iptables") is not None:
        pre, post = f"{chain[:20]}-DNAT", f"{chain[:20]}-SNAT"
        local = ["-m", "addrtype", "--dst-type", "LOCAL"]
        _ensure_jump("nat", "PREROUTING", pre, False, local)
        _ensure_jump("nat", "OUTPUT", pre, False, local)
        _ensure_jump("nat", "POSTROUTING", post, False, [])
        _ensure_jump("filter", "FORWARD", chain, False, [])
        for t, c in (("nat", pre), ("nat", post), ("filter", chain)):
            _drop_chain(t, c)
