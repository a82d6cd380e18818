#!/usr/bin/env bash
# Install the system packages that pyrun, its tests and its benches need, on Debian 12, as root.
# Idempotent: packages already installed are skipped, `apt-get update` runs at most once and only
# when something is missing and the package lists are older than a day (or when an install fails
# on stale lists). A rerun with everything present takes about a second.
#
# Environment:
#   PYRUN_CI_EXTRA_PKGS   more Debian packages to install (space separated), e.g. qemu-system-x86
#   PYRUN_CI_NO_RUSTUP=1  never download rustup; fall back to Debian's (old) cargo/rustc
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start="$(ci_now)"

# --- what we need --------------------------------------------------------------------------------
pkgs=(
    build-essential pkg-config ca-certificates curl git tar gzip xz-utils util-linux
    busybox-static debootstrap zstd pigz
    skopeo umoci podman buildah runc crun docker-registry
    containerd
    hyperfine
    iproute2 nftables iptables
)
# shellcheck disable=SC2206
pkgs+=(${PYRUN_CI_EXTRA_PKGS:-})
# Installed without their recommends: the benches' VM baseline needs only qemu's x86 emulator
# (its recommends pull in a GUI, UEFI firmware and block drivers).
norec_pkgs=(qemu-system-x86)

# Python >= 3.11 with a working venv: prefer python3.11 on PATH (pyenv's here), else Debian's python3.
py_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PYTHON=""
for cand in python3.11 python3 /usr/bin/python3.11 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
        PYTHON="$cand"
        break
    fi
done
# Debian 12's python3 is 3.11; its venv/ensurepip live in python3-venv, and `cargo test` links
# libpython3.11 from python3-dev. pyenv's build carries both.
if [[ -z "$PYTHON" ]]; then
    pkgs+=(python3 python3-venv python3-dev)
elif [[ "$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')" == /usr/* ]]; then
    pkgs+=(python3-venv python3-dev)
fi

# --- which are missing ---------------------------------------------------------------------------
missing=()
missing_norec=()
declare -A have=()
while read -r name status; do
    [[ "$status" == installed ]] && have["$name"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${pkgs[@]}" "${norec_pkgs[@]}" \
    2>/dev/null || true)
for p in "${pkgs[@]}"; do
    [[ -n "${have[$p]:-}" ]] || missing+=("$p")
done
for p in "${norec_pkgs[@]}"; do
    [[ -n "${have[$p]:-}" ]] || missing_norec+=("$p")
done

# --- Rust ----------------------------------------------------------------------------------------
ci_rust_path
need_rustup_install=0
if ! command -v cargo >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        ci_log "no cargo on PATH; installing rustup's stable toolchain"
        rustup toolchain install stable --profile minimal -c rustfmt,clippy
        rustup default stable
    elif [[ "${PYRUN_CI_NO_RUSTUP:-0}" != 1 ]]; then
        need_rustup_install=1
    else
        ci_warn "no Rust toolchain; using Debian's cargo/rustc (1.63, older than rust-version 1.80)"
        missing+=(cargo rustc rustfmt rust-clippy)
    fi
fi

# --- apt -----------------------------------------------------------------------------------------
apt_updated=0
# apt keeps an unchanged InRelease's old mtime, so the last update is recorded in a stamp (the one
# Ubuntu's update-notifier uses); package lists with no stamp count as stale.
update_stamp=/var/lib/apt/periodic/update-success-stamp
apt_update() {
    ci_log "apt-get update"
    apt-get update -qq
    mkdir -p "${update_stamp%/*}" && touch "$update_stamp"
    apt_updated=1
}
lists_fresh() {
    [[ -n "$(find "$update_stamp" -mmin -1440 -print 2>/dev/null)" ]] &&
        [[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit)" ]]
}
apt_install() {
    apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@"
}

# install_missing [APT-GET OPTIONS] -- PKGS...
install_missing() {
    local opts=()
    while [[ "$1" != -- ]]; do
        opts+=("$1")
        shift
    done
    shift
    [[ $EUID -eq 0 ]] || ci_die "must run as root to install: $*"
    ci_log "installing: $* ${opts[*]}"
    lists_fresh || apt_update
    if ! apt_install "${opts[@]}" "$@"; then
        ((apt_updated)) && ci_die "apt-get install failed"
        ci_warn "apt-get install failed; retrying after apt-get update"
        apt_update
        apt_install "${opts[@]}" "$@"
    fi
}
((${#missing[@]} == 0)) || install_missing -- "${missing[@]}"
((${#missing_norec[@]} == 0)) || install_missing --no-install-recommends -- "${missing_norec[@]}"

if ((need_rustup_install)); then
    ci_log "no Rust toolchain; installing rustup (stable, minimal + rustfmt, clippy)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --no-modify-path --profile minimal -c rustfmt,clippy
    ci_rust_path
fi

# rustfmt and clippy are needed by ci/test.sh.
if command -v rustup >/dev/null 2>&1; then
    comps=()
    cargo fmt --version >/dev/null 2>&1 || comps+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || comps+=(clippy)
    if ((${#comps[@]})); then
        ci_log "rustup component add ${comps[*]}"
        rustup component add "${comps[@]}"
    fi
fi
command -v cargo >/dev/null 2>&1 || ci_die "no cargo after install"

# --- podman: its default ulimits cannot be applied here (see shared/notes/peers.md) --------------
if [[ ! -e /etc/containers/containers.conf ]]; then
    [[ $EUID -eq 0 ]] || ci_die "must run as root to write /etc/containers/containers.conf"
    ci_log "writing /etc/containers/containers.conf (default_ulimits = [])"
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' >/etc/containers/containers.conf.tmp
    mv -f /etc/containers/containers.conf.tmp /etc/containers/containers.conf
fi

ci_log "system dependencies ok ($(ci_since "$start") s)"
