#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: set everything up, then walk through what
# pyrun does: import a rootfs as an image, inspect it, save it, remove it, load it back, copy
# it to an OCI layout that skopeo reads; build the example image (examples/compiled: a C
# program compiled by gcc in a Debian stage, copied alone into a busybox stage), push it to a
# local registry, remove it, pull it back and run it; build examples/hello and serve it on a
# user network with a published port reached from the host; run containers (foreground and
# detached: logs, exec, stop, restart policy, a volume, commit), and verify the store.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

bash ci/setup.sh
bash ci/test-images.sh busybox debian
ci_venv_env

export PYRUN_ROOT="${PYRUN_ROOT:-/var/lib/pyrun}"
work="$(mktemp -d /tmp/pyrun-demo.XXXXXX)"
registry_pid=""
cleanup() {
    pyrun rm -f hello-svc demo-web demo-writer >/dev/null 2>&1 || true
    pyrun network rm demo-net >/dev/null 2>&1 || true
    if [[ -n "$registry_pid" ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A local registry (Debian's docker-registry) on a free loopback port, for push and pull.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/registry"
printf 'version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
    "$work/registry/data" "$port" >"$work/registry/config.yml"
docker-registry serve "$work/registry/config.yml" 2>"$work/registry/log" &
registry_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.05
done
REG="127.0.0.1:$port"

show() { printf '\n$ %s\n' "$*"; "$@"; }

show pyrun import --change 'CMD ["/bin/sh", "-c", "echo hello from pyrun"]' \
    -m "busybox from Debian's busybox-static" "$PYRUN_TEST_BUSYBOX_TAR" demo/busybox:1
show pyrun images demo/busybox
show pyrun history demo/busybox:1
show pyrun image inspect demo/busybox:1
show pyrun save -o "$work/busybox.tar" demo/busybox:1
show pyrun rmi demo/busybox:1
show pyrun load -i "$work/busybox.tar"
show pyrun image copy demo/busybox:1 "oci:$work/layout:1"
if command -v skopeo >/dev/null; then
    show skopeo inspect "oci:$work/layout:1"
fi
# Build the example image (examples/compiled: gcc from Debian's mirror in a Debian stage, the
# static binary alone in a busybox stage), push it to the local registry, remove it here, pull
# it back and run it.
show pyrun import -m "debootstrap --variant=minbase bookworm" "$PYRUN_TEST_DEBIAN_TAR" demo/debian:12
show pyrun build -t "$REG/demo/compiled:1" examples/compiled
show pyrun images "$REG/demo/compiled"
show pyrun push "$REG/demo/compiled:1"
show pyrun rmi "$REG/demo/compiled:1"
show pyrun pull "$REG/demo/compiled:1"
show pyrun run --rm "$REG/demo/compiled:1"
show pyrun run --rm "$REG/demo/compiled:1" pyrun
# examples/hello (two stages on the busybox image) through the registry too, then as a
# service: on a user network of its own, reached by name from another container and from the
# host through a published port.
show pyrun build -t demo/hello:1 examples/hello
show pyrun tag demo/hello:1 "$REG/demo/hello:1"
show pyrun push "$REG/demo/hello:1"
show pyrun rmi "$REG/demo/hello:1" demo/hello:1
show pyrun pull "$REG/demo/hello:1"
show pyrun run --rm "$REG/demo/hello:1" pyrun
show pyrun network create demo-net
web_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')"
show pyrun run -d --name hello-svc --network demo-net -p "127.0.0.1:$web_port:8080" "$REG/demo/hello:1" serve
show pyrun port hello-svc
show pyrun run --rm --network demo-net demo/busybox:1 sh -c \
    'for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://hello-svc:8080/ && exit; sleep 0.2; done; exit 1'
show python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$web_port/', timeout=5).read().decode().strip())"
show pyrun rm -f hello-svc
show pyrun network rm demo-net
show pyrun rmi "$REG/demo/hello:1"
show pyrun run --rm demo/busybox:1
show pyrun run --rm --hostname demo -u nobody demo/busybox:1 sh -c 'echo "I am $(id -u) on $(hostname), PID $$"'
show pyrun run --name demo-writer demo/busybox:1 sh -c 'echo data > /note; exit 3' || echo "(exit status $?)"
show pyrun ps -a
show pyrun rm demo-writer
show pyrun run -d --name demo-web --restart on-failure:2 -v demo-data:/data demo/busybox:1 \
    sh -c 'echo started; date >> /data/visits; echo "written by demo-web" > /note; while sleep 0.2; do echo tick; done'
sleep 1
show pyrun ps
show pyrun logs --tail 3 demo-web
show pyrun exec demo-web sh -c 'echo "exec in $(hostname): $(ps | wc -l) lines of ps"; cat /data/visits'
show pyrun top demo-web
show pyrun stop -t 1 demo-web
show pyrun commit -m "with a visit log" demo-web demo/busybox:visited
show pyrun run --rm demo/busybox:visited cat /note
show pyrun rm demo-web
show pyrun volume ls
show pyrun volume rm demo-data
show pyrun rmi demo/busybox:visited
show pyrun system check
printf '\ndemo finished: store at %s\n' "$PYRUN_ROOT"
