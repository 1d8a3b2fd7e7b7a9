#!/usr/bin/env bash
# The Debian packages the dev cluster's real node runs with (runc for containers; nftables, iptables,
# ipset and conntrack for kube-proxy and the NetworkPolicy controller; busybox-static for test images;
# socat relays pods' API requests to the loopback API server).
# Installs what is missing when run as root; otherwise says what to install.
set -euo pipefail
need=()
for pair in runc:/usr/sbin/runc nftables:/usr/sbin/nft iptables:/usr/sbin/iptables ipset:/usr/sbin/ipset \
            conntrack:/usr/sbin/conntrack iproute2:/usr/sbin/ip busybox-static:/bin/busybox \
            socat:/usr/bin/socat; do
  [ -x "${pair#*:}" ] || need+=("${pair%%:*}")
done
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "host-packages: the real node needs these Debian packages: ${need[*]} (install them as root)" >&2
  exit 1
fi
echo "host-packages: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null || {
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}
