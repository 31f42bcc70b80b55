#!/usr/bin/env bash
# Prepare a Debian 12 build host (or CI runner) for make image / make image-test: the packages,
# and binfmt_misc for running arm64 binaries under qemu-user (on hosts whose PID 1 is not
# systemd nothing mounts it). Idempotent; needs root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends \
	qemu-user-static binfmt-support arch-test mmdebstrap qemu-system-arm qemu-utils qemu-efi-aarch64 \
	ipxe-qemu mtools dosfstools e2fsprogs genimage zbar-tools wireguard-tools wireguard-go \
	iproute2 curl socat systemd >/dev/null
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || { echo "host-setup: no binfmt handler for aarch64" >&2; exit 1; }
echo "host-setup: ready (qemu-aarch64 binfmt: $(head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64))"
