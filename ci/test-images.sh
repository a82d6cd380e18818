#!/usr/bin/env bash
# Build and cache the root filesystem tars that the tests use. No public registry is needed.
#
#   ci/test-images.sh [--force] [busybox|debian|all ...]    (default: all)
#   ci/test-images.sh --print                               print NAME=PATH for the env vars
#
#   busybox  $PYRUN_TEST_BUSYBOX_TAR (default $PYRUN_TEST_CACHE/busybox.tar): Debian's busybox-static
#            with one symlink per applet, /etc/passwd, /etc/group; reproducible (sorted, numeric
#            owner 0/0, mtime @$SOURCE_DATE_EPOCH, default 1700000000). Needs no root.
#   debian   $PYRUN_TEST_DEBIAN_TAR (default $PYRUN_TEST_CACHE/debian.tar) and its .gz and .zst:
#            `debootstrap --variant=minbase bookworm` (~30 s, network to the mirror). Needs root.
#
# PYRUN_TEST_CACHE defaults to /var/cache/pyrun-test. Each file is built in a temporary directory
# beside it and renamed into place, so an interrupted build never leaves a partial file; a file
# that exists is kept (--force rebuilds). Concurrent runs serialise on a lock file per image.
# Other knobs: PYRUN_TEST_DEBIAN_MIRROR (http://deb.debian.org/debian), PYRUN_TEST_DEBIAN_SUITE.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
umask 022

SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
MIRROR="${PYRUN_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${PYRUN_TEST_DEBIAN_SUITE:-bookworm}"

force=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --print)
            printf 'PYRUN_TEST_CACHE=%s\nPYRUN_TEST_BUSYBOX_TAR=%s\nPYRUN_TEST_DEBIAN_TAR=%s\n' \
                "$PYRUN_TEST_CACHE" "$PYRUN_TEST_BUSYBOX_TAR" "$PYRUN_TEST_DEBIAN_TAR"
            exit 0
            ;;
        busybox | debian) targets+=("$arg") ;;
        all) targets+=(busybox debian) ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) ci_die "unknown argument: $arg (try --help)" ;;
    esac
done
((${#targets[@]})) || targets=(busybox debian)

# --- temporary directories: always removed, mounts under them (debootstrap's) detached first ----
tmpdirs=()
remove_tree() {
    local m
    # Detach mounts below it, deepest first, so rm never descends into /proc or /sys.
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "$1"
}
cleanup() {
    local d
    for d in "${tmpdirs[@]}"; do
        [[ -d "$d" ]] && remove_tree "$d"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# new_tmpdir DIR NAME -> prints a fresh temporary directory inside DIR (same filesystem as the
# final file, so the last step is an atomic rename). Must not be called in a subshell.
TMP=""
new_tmpdir() {
    mkdir -p "$1"
    TMP="$(mktemp -d "$1/.tmp-$2.XXXXXX")"
    tmpdirs+=("$TMP")
}

# lock NAME DIR: hold an exclusive lock for the rest of the script (fd per name), then remove what
# a killed build of NAME left behind (SIGKILL skips the EXIT trap).
lock() {
    local fd d
    mkdir -p "$2"
    exec {fd}>"$2/.lock-$1"
    if ! flock -n "$fd"; then
        ci_log "$1: waiting for another build to finish"
        flock "$fd"
    fi
    for d in "$2/.tmp-$1".* "$2/.tmp-$1"-*.*; do
        [[ -d "$d" ]] || continue
        ci_log "$1: removing a stale ${d##*/}"
        remove_tree "$d"
    done
}

# --- busybox --------------------------------------------------------------------------------------
build_busybox() {
    local out="$PYRUN_TEST_BUSYBOX_TAR" dir
    dir="$(dirname "$out")"
    lock busybox "$dir"
    if [[ -s "$out" && $force == 0 ]]; then
        ci_log "busybox: cached $out"
        return
    fi
    local bb=/bin/busybox
    if [[ ! -x "$bb" ]] || ! dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null |
        grep -qx installed; then
        ci_die "busybox-static is not installed (run ci/install-deps.sh)"
    fi

    local start
    start="$(ci_now)"
    new_tmpdir "$dir" busybox
    local root="$TMP/rootfs"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,tmp}
    chmod 0755 "$root"/{bin,sbin,usr,usr/bin,usr/sbin,etc,proc,sys,dev}
    chmod 0700 "$root/root"
    chmod 1777 "$root/tmp"
    install -m 0755 "$bb" "$root/bin/busybox"

    local applet n=0
    while read -r applet; do
        [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sfn /bin/busybox "$root/$applet"
        n=$((n + 1))
    done < <("$root/bin/busybox" --list-full)
    [[ -L "$root/bin/sh" ]] || ln -sfn /bin/busybox "$root/bin/sh"

    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
    chmod 0644 "$root/etc/passwd" "$root/etc/group"

    tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
        --numeric-owner -C "$root" -cf "$TMP/busybox.tar" .
    mv -f "$TMP/busybox.tar" "$out"
    ci_log "busybox: built $out ($n applets, $(du -h "$out" | cut -f1), $(ci_since "$start") s)"
}

# --- debian ---------------------------------------------------------------------------------------
# compress TOOL... : write "$PYRUN_TEST_DEBIAN_TAR.EXT" from the plain tar through TOOL.
compress() {
    local ext="$1" out="$PYRUN_TEST_DEBIAN_TAR.$1" start
    shift
    start="$(ci_now)"
    new_tmpdir "$(dirname "$out")" "debian-$ext"
    "$@" <"$PYRUN_TEST_DEBIAN_TAR" >"$TMP/debian.tar.$ext"
    mv -f "$TMP/debian.tar.$ext" "$out"
    ci_log "debian: built $out ($(du -h "$out" | cut -f1), $1 $(ci_since "$start") s)"
}

build_debian() {
    local out="$PYRUN_TEST_DEBIAN_TAR" dir rebuilt=0
    dir="$(dirname "$out")"
    lock debian "$dir"
    if [[ -s "$out" && $force == 0 ]]; then
        ci_log "debian: cached $out"
    else
        [[ $EUID -eq 0 ]] || ci_die "debian: debootstrap needs root"
        command -v debootstrap >/dev/null || ci_die "debootstrap is not installed (run ci/install-deps.sh)"
        local start debs="$PYRUN_TEST_CACHE/debootstrap-debs"
        new_tmpdir "$dir" debian
        mkdir -p "$debs"
        start="$(ci_now)"
        ci_log "debian: debootstrap --variant=minbase $SUITE ($MIRROR)"
        if ! debootstrap --variant=minbase --cache-dir="$debs" "$SUITE" "$TMP/rootfs" "$MIRROR" \
            >"$TMP/debootstrap.log" 2>&1; then
            tail -n 30 "$TMP/debootstrap.log" >&2
            [[ -f "$TMP/rootfs/debootstrap/debootstrap.log" ]] &&
                tail -n 30 "$TMP/rootfs/debootstrap/debootstrap.log" >&2
            ci_die "debian: debootstrap failed"
        fi
        ci_log "debian: debootstrap done ($(ci_since "$start") s)"
        start="$(ci_now)"
        tar --sort=name --numeric-owner --xattrs -C "$TMP/rootfs" -cf "$TMP/debian.tar" .
        mv -f "$TMP/debian.tar" "$out"
        rebuilt=1
        ci_log "debian: built $out ($(du -h "$out" | cut -f1), tar $(ci_since "$start") s)"
    fi
    # The compressed copies follow the plain tar: rebuilt with it, or when missing.
    if ((rebuilt)) || [[ ! -s "$out.gz" ]]; then
        if command -v pigz >/dev/null; then
            compress gz pigz -6 -n -c
        else
            compress gz gzip -6 -n -c
        fi
    fi
    if ((rebuilt)) || [[ ! -s "$out.zst" ]]; then
        compress zst zstd -3 -q -T0 -c
    fi
}

for t in "${targets[@]}"; do
    "build_$t"
done
