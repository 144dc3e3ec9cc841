#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs
# `cargo test` with any arguments given. Run it as root on Debian: the
# network tests build emulated LANs in network namespaces, and the missing
# tools come from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")"

# tool -> the Debian package that brings it
tools=(
    ip:iproute2
    nft:nftables
    ping:iputils-ping
    arping:iputils-arping
    nsenter:util-linux
    systemd-analyze:systemd
    python3:python3
    cc:gcc
    debootstrap:debootstrap
    systemd-nspawn:systemd-container
)
need=()
for pair in "${tools[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "test.sh: missing packages: ${need[*]} (run as root on Debian to install them)" >&2
    fi
fi

exec cargo test "$@"
