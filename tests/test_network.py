"""Networking: the default bridge with NAT and published ports, user networks with name
resolution and isolation, IPAM under concurrency, coexistence with the Docker engine's
firewall, and no leaks (veths, leases, namespaces, firewall rules) after rm, kill -9 and
failures. Real bridges, veths, nftables and iptables on this host."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import PyrunRunner, needs_root, until
from pyrun.client import Client
from pyrun.network import Networks, int_to_ip, ip_to_int, mac_for, netns_path, store_tag
from pyrun.store import Store

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's `ip` is not installed"),
]

PAGE = "hello-from-httpd\n"


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:net")
    return client


@pytest.fixture
def www(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text(PAGE)
    return d


def links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return [str(x["ifname"]) for x in json.loads(out)]


def veths_of(cid: str) -> list[str]:
    return [name for name in links() if name.startswith(f"veth{cid[:10]}")]


def nft_table(store_root: Path) -> str:
    tag = store_tag(Store(store_root))
    r = subprocess.run(
        ["nft", "list", "table", "ip", f"pyrun_{tag}" if tag else "pyrun"],
        capture_output=True,
        text=True,
        check=False,
    )
    return r.stdout


def leases(store_root: Path) -> list[str]:
    return sorted(
        p.read_text() for p in (store_root / "networks").glob("*/ips/*") if p.name != ".last"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def host_address() -> str:
    """This host's address on its default route's interface (not loopback, not a bridge)."""
    out = subprocess.run(
        ["ip", "-j", "route", "get", "192.0.2.123"], capture_output=True, text=True, check=True
    ).stdout
    return str(json.loads(out)[0]["prefsrc"])


def httpd(pyrun: PyrunRunner, www: Path, *args: str) -> str:
    r = pyrun(
        "run",
        "-d",
        *args,
        "-v",
        f"{www}:/www:ro",
        "bb:net",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# busybox 1.35's static wget crashes with -T: time out with the timeout applet instead.
WGET = "timeout 5 wget -q -O-"


def test_default_bridge_address_route_files_and_release(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    veths = {x for x in links() if x.startswith("veth")}
    r = pyrun(
        "run", "--rm", "--dns", "9.9.9.9", "--dns-search", "example.org",
        "--add-host", "db.local:10.1.2.3", "--add-host", "gw:host-gateway", "-h", "box",
        "bb:net", "sh", "-c",
        "ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf /etc/hosts /etc/hostname; hostname",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    net = Networks(Store(store_root)).get("bridge")
    out = r.stdout
    assert f"inet {net.subnet.rsplit('.', 1)[0]}." in out
    assert f"default via {net.gateway} dev eth0" in out
    assert "nameserver 9.9.9.9" in out and "search example.org" in out
    assert "10.1.2.3\tdb.local" in out and f"{net.gateway}\tgw" in out
    assert "127.0.0.1\tlocalhost" in out
    assert out.rstrip().endswith("box\nbox")
    # --rm: everything is released when it exits.
    until(lambda: {x for x in links() if x.startswith("veth")} <= veths)
    assert leases(store_root) == []
    assert not list((store_root / "networks").glob("*/endpoints/*.json"))


def test_container_reaches_the_host_and_the_host_reaches_published_ports(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    # A server on the host, reached from a container through the bridge's gateway and through
    # the host's own address.
    port = free_port()
    handler = type("H", (http.server.BaseHTTPRequestHandler,), {
        "do_GET": lambda self: (self.send_response(200), self.end_headers(), self.wfile.write(b"from-host")),
        "log_message": lambda self, *a: None,
    })  # fmt: skip
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = Networks(Store(store_root)).get("bridge").gateway
        r = pyrun("run", "--rm", "bb:net", "sh", "-c",
                  f"{WGET} http://{gw}:{port}/; echo; {WGET} http://{host_address()}:{port}/")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["from-host", "from-host"]
    finally:
        server.shutdown()
        server.server_close()

    hp = free_port()
    cid = httpd(pyrun, www, "-p", f"{hp}:80")
    assert http_get(f"http://127.0.0.1:{hp}/") == PAGE
    assert http_get(f"http://{host_address()}:{hp}/") == PAGE
    # Hairpin: another container through the host's address.
    r = pyrun("run", "--rm", "bb:net", "sh", "-c", f"{WGET} http://{host_address()}:{hp}/")
    assert r.stdout == PAGE, r.stderr
    info = json.loads(pyrun("inspect", cid).stdout)[0]
    assert info["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(hp)}]
    }
    assert info["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == str(hp)
    assert str(hp) in nft_table(store_root)
    assert pyrun("rm", "-f", cid).returncode == 0
    # The rule, the veth and the lease went with it.
    assert str(hp) not in nft_table(store_root)
    until(lambda: veths_of(cid) == [])  # the kernel removes them with the namespace
    assert leases(store_root) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{hp}/", timeout=1)


def test_publish_all_and_udp(
    bb: Client, pyrun: PyrunRunner, store_root: Path, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM bb:net\nEXPOSE 80 53/udp\n")
    assert pyrun("build", "-q", "-t", "bb:exposed", str(ctx)).returncode == 0
    r = pyrun("run", "-d", "-P", "bb:exposed", "sleep", "100")
    assert r.returncode == 0, r.stderr
    ports = json.loads(pyrun("inspect", r.stdout.strip()).stdout)[0]["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "53/udp"}
    assert all(int(v[0]["HostPort"]) > 0 for v in ports.values())
    assert f"udp dport {ports['53/udp'][0]['HostPort']}" in nft_table(store_root)


def test_user_network_name_resolution_and_isolation(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    assert pyrun("network", "create", "front").returncode == 0
    assert pyrun("network", "create", "--subnet", "10.231.7.0/24", "back").returncode == 0
    web = httpd(pyrun, www, "--name", "web", "--network", "front", "--network-alias", "www")
    # By name, by alias, by short ID, from another container on the same network.
    r = pyrun("run", "--rm", "--network", "front", "bb:net", "sh", "-c",
              f"{WGET} http://web/ && {WGET} http://www/ && {WGET} http://{web[:12]}/")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == PAGE * 3
    # Another network cannot reach it, by name or by address.
    ip = json.loads(pyrun("inspect", web).stdout)[0]["NetworkSettings"]["Networks"]["front"][
        "IPAddress"
    ]
    r = pyrun("run", "--rm", "--network", "back", "bb:net", "sh", "-c",
              f"{WGET} http://{ip}/ || echo blocked; {WGET} http://web/ || echo unknown")  # fmt: skip
    assert "blocked" in r.stdout and "unknown" in r.stdout and PAGE not in r.stdout
    # Nor can the default bridge.
    r = pyrun("run", "--rm", "bb:net", "sh", "-c", f"{WGET} http://{ip}/ || echo blocked")
    assert "blocked" in r.stdout
    # Names follow starts and stops: a running client sees a server that starts later and
    # loses it when it stops.
    client = pyrun("run", "-d", "--network", "front", "bb:net", "sleep", "100").stdout.strip()
    late = httpd(pyrun, www, "--name", "late", "--network", "front")
    r = pyrun("exec", client, "sh", "-c", f"{WGET} http://late/")
    assert r.stdout == PAGE
    assert pyrun("stop", "-t", "1", late).returncode == 0
    until(lambda: "late" not in pyrun("exec", client, "cat", "/etc/hosts").stdout)
    # connect/disconnect: the client joins back, reaches back's containers, leaves again.
    b = httpd(pyrun, www, "--name", "bsrv", "--network", "back")
    assert pyrun("network", "connect", "--alias", "cli", "back", client).returncode == 0
    r = pyrun("exec", client, "sh", "-c", f"ip -o -4 addr show eth1; {WGET} http://bsrv/")
    assert "10.231.7." in r.stdout and PAGE in r.stdout, r.stderr
    assert "cli" in pyrun("exec", b, "cat", "/etc/hosts").stdout
    assert pyrun("network", "disconnect", "back", client).returncode == 0
    assert "eth1" not in pyrun("exec", client, "ip", "-o", "link").stdout
    # rm refuses a network in use, then works once its containers are gone.
    r = pyrun("network", "rm", "front")
    assert r.returncode == 1 and "active endpoints" in r.stderr
    for c in (web, client, late, b):
        pyrun("rm", "-f", c)
    assert pyrun("network", "rm", "front", "back").returncode == 0
    assert not any(x.startswith("pyr-") and x in str(store_root) for x in links())
    names = {
        json.loads(line)["Name"]
        for line in pyrun("network", "ls", "--format", "json").stdout.splitlines()
    }
    assert names == {"bridge", "host", "none"}


def test_internal_network_reaches_nothing_outside(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    assert pyrun("network", "create", "--internal", "sealed").returncode == 0
    hp = free_port()
    httpd(pyrun, www, "-p", f"{hp}:80")
    r = pyrun("run", "--rm", "--network", "sealed", "bb:net", "sh", "-c",
              f"ip route; {WGET} http://{host_address()}:{hp}/ || echo blocked")  # fmt: skip
    assert "default" not in r.stdout and "blocked" in r.stdout


def test_fifty_containers_get_unique_addresses(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    assert pyrun("network", "create", "many").returncode == 0

    def start(i: int) -> str:
        r = pyrun("run", "-d", "--network", "many", "bb:net", "sleep", "300")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        cids = list(pool.map(start, range(50)))
    c = Client(store_root)
    ips = [c.containers.get(cid).attrs["NetworkSettings"]["IPAddress"] for cid in cids]
    assert len(set(ips)) == 50 and all(ips)
    assert len(leases(store_root)) == 50
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: pyrun("rm", "-f", cid), cids))
    assert leases(store_root) == []
    until(lambda: not [x for x in links() if any(x.startswith(f"veth{c[:10]}") for c in cids)])


def test_host_none_and_container_modes(bb: Client, pyrun: PyrunRunner, www: Path) -> None:
    r = pyrun("run", "--rm", "--network", "none", "bb:net", "ip", "-o", "link")
    assert len(r.stdout.splitlines()) == 1 and "1: lo:" in r.stdout
    r = pyrun("run", "--rm", "--network", "host", "bb:net", "hostname")
    assert r.stdout.strip() == socket.gethostname()
    web = httpd(pyrun, www)
    r = pyrun(
        "run",
        "--rm",
        "--network",
        f"container:{web}",
        "bb:net",
        "sh",
        "-c",
        f"{WGET} http://127.0.0.1/",
    )
    assert r.stdout == PAGE, r.stderr


def test_python_api_networks_and_ports(bb: Client, www: Path, store_root: Path) -> None:
    n = bb.networks.create("api-net", ipam={"Config": [{"Subnet": "10.232.9.0/24"}]})
    assert n.attrs["IPAM"]["Config"][0] == {"Subnet": "10.232.9.0/24", "Gateway": "10.232.9.1"}
    hp = free_port()
    c = bb.containers.run(
        "bb:net", ["httpd", "-f", "-p", "80", "-h", "/www"], detach=True, network="api-net",
        ports={"80/tcp": ("127.0.0.1", hp)}, volumes={str(www): {"bind": "/www", "mode": "ro"}},
    )  # fmt: skip
    assert http_get(f"http://127.0.0.1:{hp}/") == PAGE
    assert [x.id for x in n.containers] == [c.id]
    assert c.attrs["NetworkSettings"]["Networks"]["api-net"]["IPAddress"].startswith("10.232.9.")
    assert {x.name for x in bb.networks.list()} >= {"bridge", "api-net"}
    c.remove(force=True)
    n.remove()
    assert [x.name for x in bb.networks.list(names=["api-net"])] == []


def test_bad_input_is_one_line_and_leaves_nothing(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    def one_line(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
        assert r.returncode == code, (r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        for w in words:
            assert w in lines[0], lines[0]

    assert pyrun("network", "create", "--subnet", "10.233.0.0/16", "one").returncode == 0
    one_line(pyrun("network", "create", "--subnet", "10.233.4.0/24", "two"), 1, "overlaps", "one")
    one_line(pyrun("network", "create", "--subnet", "10.233.4.1/24", "three"), 1, "host bits")
    one_line(pyrun("network", "create", "one"), 1, "already exists")
    one_line(pyrun("network", "rm", "nosuch"), 1, "not found")
    before = pyrun("ps", "-aq").stdout
    one_line(
        pyrun("run", "--rm", "--network", "nosuch", "bb:net", "true"), 125, "nosuch", "not found"
    )
    for bad in ("80:", "x:80", "70000:80", "1:2:3:4", "80/sctp", "300.1.1.1:80:80"):
        one_line(pyrun("run", "--rm", "-p", bad, "bb:net", "true"), 125, "invalid port")
    one_line(pyrun("run", "--rm", "--add-host", "nocolon", "bb:net", "true"), 125, "--add-host")
    one_line(
        pyrun("run", "--rm", "--network", "host", "-p", "80:80", "bb:net", "true"),
        125,
        "conflicting",
    )
    assert pyrun("ps", "-aq").stdout == before  # no container was made
    # A port in use (by another container, or by a host process): the start fails, nothing is
    # left configured.
    hp = free_port()
    httpd(pyrun, www, "-p", f"{hp}:80")
    veths = [x for x in links() if x.startswith("veth")]
    n_leases = len(leases(store_root))
    one_line(pyrun("run", "--rm", "-p", f"{hp}:80", "bb:net", "true"), 125, "already allocated")
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = pyrun("run", "-d", "--name", "clash", "-p", f"{taken}:80", "bb:net", "sleep", "9")
        one_line(r, 125, "already allocated")
    until(lambda: [x for x in links() if x.startswith("veth")] == veths)
    assert len(leases(store_root)) == n_leases
    st = json.loads(pyrun("inspect", "clash").stdout)[0]["State"]
    assert st["Status"] == "created" and not st["Running"]


def _kill9_and_recover(pyrun: PyrunRunner, store_root: Path, cid: str, victim: int) -> None:
    veths = veths_of(cid)
    assert veths and netns_path(Store(store_root), cid).exists()
    os.kill(victim, signal.SIGKILL)
    # The next reader recovers the container and releases its network.
    until(lambda: "Exited" in pyrun("ps", "-a", "--filter", f"id={cid}").stdout)
    until(lambda: veths_of(cid) == [])
    assert not netns_path(Store(store_root), cid).exists()
    assert leases(store_root) == []
    assert "dport" not in nft_table(store_root)


def test_kill9_of_monitor_or_cli_leaves_nothing(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    hp = free_port()
    cid = httpd(pyrun, www, "-p", f"{hp}:80")
    monitor = json.loads(pyrun("inspect", cid).stdout)[0]["MonitorPid"]
    assert http_get(f"http://127.0.0.1:{hp}/") == PAGE
    _kill9_and_recover(pyrun, store_root, cid, monitor)
    # A foreground run whose CLI is killed -9.
    cli = subprocess.Popen(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "run", "--name", "fg", "-p", f"{hp}:80",
         "bb:net", "sleep", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        until(lambda: "Up" in pyrun("ps", "--filter", "name=fg").stdout)
        fg = pyrun("ps", "-q", "--no-trunc", "--filter", "name=fg").stdout.strip()
        _kill9_and_recover(pyrun, store_root, fg, cli.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            cli.kill()
        cli.wait()


@pytest.mark.skipif(shutil.which("docker") is None, reason="the Docker engine is not installed")
def test_works_beside_the_docker_engine_firewall(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path
) -> None:
    """Docker sets the FORWARD policy to DROP; pyrun's traffic is forwarded both ways anyway:
    a container reaches a host on another network through NAT, and that host reaches a
    published port."""
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("the Docker engine is not running")
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    assert "-P FORWARD DROP" in rules and "DOCKER" in rules  # Docker's rules are in place
    # An "outside" host: a namespace on a veth of its own, 198.51.100.0/24 (TEST-NET-2).
    ns = f"pyrun-ext-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        sh = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        sh("ip", "link", "add", "pyx-h", "type", "veth", "peer", "name", "pyx-n", "netns", ns)
        sh("ip", "addr", "add", "198.51.100.1/24", "dev", "pyx-h")
        sh("ip", "link", "set", "pyx-h", "up")
        sh("ip", "-n", ns, "addr", "add", "198.51.100.2/24", "dev", "pyx-n")
        sh("ip", "-n", ns, "link", "set", "pyx-n", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        port = free_port()
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server",
             "--bind", "198.51.100.2", str(port), "--directory", str(www)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            r = pyrun("run", "--rm", "bb:net", "sh", "-c",
                      f"for i in 1 2 3 4 5; do {WGET} http://198.51.100.2:{port}/ && break; sleep 0.3; done")  # fmt: skip
            assert r.stdout == PAGE, r.stderr
            hp = free_port()
            httpd(pyrun, www, "-p", f"{hp}:80")
            r = subprocess.run(
                ["ip", "netns", "exec", ns, "wget", "-q", "-O-", f"http://198.51.100.1:{hp}/"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            if r.returncode != 0 and shutil.which("wget") is None:
                r = subprocess.run(
                    ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", f"http://198.51.100.1:{hp}/"],
                    capture_output=True, text=True, timeout=20,
                )  # fmt: skip
            assert r.stdout == PAGE, r.stderr
        finally:
            server.kill()
            server.wait()
    finally:
        subprocess.run(["ip", "link", "del", "pyx-h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_store_purge_removes_bridges_and_rules(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    from pyrun.network import purge

    assert pyrun("network", "create", "gone").returncode == 0
    assert pyrun("run", "--rm", "bb:net", "true").returncode == 0
    bridges = [n.bridge for n in Networks(Store(store_root)).list()]
    assert all(b in links() for b in bridges)
    purge(Store(store_root))
    assert not any(b in links() for b in bridges)
    assert nft_table(store_root) == ""
    chain = f"PYRUN-{store_tag(Store(store_root))}"
    assert chain not in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout


def test_system_prune_releases_what_a_crash_left(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    """A crash in the middle of `rm` (the container's record gone, its network not released):
    `system prune` releases the veth, lease and namespace and removes unused networks."""
    assert pyrun("network", "create", "crashy").returncode == 0
    cid = pyrun("run", "-d", "--network", "crashy", "bb:net", "sleep", "300").stdout.strip()
    info = json.loads(pyrun("inspect", cid).stdout)[0]
    assert veths_of(cid) and leases(store_root) == [cid]
    os.kill(info["MonitorPid"], signal.SIGKILL)
    os.kill(info["State"]["Pid"], signal.SIGKILL)
    until(lambda: not Path(f"/proc/{info['State']['Pid']}").exists())
    # What rm does first (unmount, remove), then "the crash": the record is gone, the network
    # state is not.
    run_dir = Store(store_root).run_root / cid
    subprocess.run(["umount", "-l", str(run_dir / "rootfs")], check=True)
    shutil.rmtree(store_root / "containers" / cid)
    assert veths_of(cid) and leases(store_root) == [cid]
    r = pyrun("system", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert "crashy" in r.stdout
    assert leases(store_root) == []
    until(lambda: veths_of(cid) == [])
    assert not netns_path(Store(store_root), cid).exists()
    assert not run_dir.exists()  # the runtime directory of a container that is gone


def test_disconnect_and_reconnect_the_primary_network(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    assert pyrun("network", "create", "prim").returncode == 0
    cid = pyrun("run", "-d", "--network", "prim", "bb:net", "sleep", "300").stdout.strip()
    assert "eth0" in pyrun("exec", cid, "ip", "-o", "link").stdout
    assert pyrun("network", "disconnect", "prim", cid).returncode == 0
    assert "eth" not in pyrun("exec", cid, "ip", "-o", "link").stdout
    assert leases(store_root) == []
    r = pyrun("network", "disconnect", "prim", cid)
    assert r.returncode == 1 and "not connected" in r.stderr
    assert pyrun("network", "connect", "prim", cid).returncode == 0
    out = pyrun("exec", cid, "ip", "-o", "-4", "addr").stdout
    assert "eth0" in out and "10.2" in out
    # Stop and start: it comes back on the network, and everything goes with rm.
    assert pyrun("restart", "-t", "0", cid).returncode == 0
    assert "eth0" in pyrun("exec", cid, "ip", "-o", "link").stdout
    assert pyrun("rm", "-f", cid).returncode == 0
    assert leases(store_root) == []
    until(lambda: veths_of(cid) == [])


def test_iptables_backend_publishes_and_isolates(
    bb: Client, pyrun: PyrunRunner, store_root: Path, www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where nft is absent the rules go through iptables-restore (forced here): published
    ports from the host and from a container, outbound NAT, isolation; all gone with purge."""
    from pyrun.network import purge

    monkeypatch.setenv("PYRUN_FIREWALL", "iptables")
    hp = free_port()
    cid = httpd(pyrun, www, "-p", f"{hp}:80")
    assert http_get(f"http://127.0.0.1:{hp}/") == PAGE
    r = pyrun("run", "--rm", "bb:net", "sh", "-c", f"{WGET} http://{host_address()}:{hp}/")
    assert r.stdout == PAGE, r.stderr
    assert nft_table(store_root) == ""  # nothing through nft
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert f"--dport {hp}" in nat
    assert pyrun("network", "create", "other").returncode == 0
    ip = json.loads(pyrun("inspect", cid).stdout)[0]["NetworkSettings"]["IPAddress"]
    r = pyrun(
        "run",
        "--rm",
        "--network",
        "other",
        "bb:net",
        "sh",
        "-c",
        f"{WGET} http://{ip}/ || echo blocked",
    )
    assert "blocked" in r.stdout
    pyrun("rm", "-f", cid)
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert f"--dport {hp}" not in nat
    purge(Store(store_root))
    tag = store_tag(Store(store_root))
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert f"PYRUN-{tag}" not in rules


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_ipv4_arithmetic_matches_the_socket_module(n: int) -> None:
    text = socket.inet_ntoa(n.to_bytes(4, "big"))
    assert int_to_ip(n) == text
    assert ip_to_int(text) == n
    assert mac_for(text) == b"\x02\x42" + socket.inet_aton(text)


@pytest.mark.parametrize(
    "bad", ["1.2.3", "1.2.3.256", "0x1.1.1.1", "1.2.3.4.5", "", "1.2.3.²", "1..2.3"]
)
def test_ipv4_parser_takes_dotted_quads_only(bad: str) -> None:
    with pytest.raises(ValueError):
        ip_to_int(bad)
