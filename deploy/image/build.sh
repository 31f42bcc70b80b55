#!/usr/bin/env bash
# Track B image build: a Debian-only arm64 SD-card image for Raspberry Pi 3/4/400/Zero 2 W.
#
#   deploy/image/build.sh [--base-only] [DEB...]
#
# Without DEB it first runs deploy/dist.sh --deb and uses the arm64 package that makes.
# 1. base root filesystem: mmdebstrap (arm64, under qemu-user) with the kernel, a small
#    initramfs (MODULES=list, seeded BEFORE the kernel is installed) and raspi-firmware; cached
#    as a tarball keyed on everything that goes into it, so warm runs skip the ~7 minute step;
# 2. deploy/image/customize.sh on an unpacked copy (installs the .debs, fstab, network, ...);
# 3. mkfs.vfat + mcopy (boot partition), mkfs.ext4 -d (root), genimage -> $OUT/sdcard.img,
#    plus $OUT/vmlinuz and $OUT/initrd.img for the qemu boot test.
#
# Environment: OUT (default out/image), CACHE (default $HOME/.cache/printgate-image),
# MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
# Needs root, mmdebstrap, qemu-user-static with binfmt_misc for aarch64, dosfstools, mtools,
# e2fsprogs, genimage. No loop devices, no mounts.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-out/image}"
CACHE="${CACHE:-${HOME:-/root}/.cache/printgate-image}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE="${SUITE:-bookworm}"

base_only=false
if [[ "${1:-}" == "--base-only" ]]; then
	base_only=true
	shift
fi

log() { printf '%s build.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (mmdebstrap --mode=root, file ownership in the image)"
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy genimage; do
	command -v "$tool" >/dev/null || die "missing $tool (apt-get install mmdebstrap e2fsprogs dosfstools mtools genimage)"
done
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
	die "no binfmt_misc handler for aarch64: apt-get install qemu-user-static binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64"
fi

# Everything that decides the base tarball's content is in this block; its hash is the cache key.
packages="systemd-sysv,udev,kmod,iproute2,ca-certificates,adduser,systemd-timesyncd,systemd-resolved,initramfs-tools,linux-image-arm64,raspi-firmware"
# Modules for the initramfs: qemu virt (virtio) and the Pi's SD controllers (sdhost on Pi 3,
# sdhci-iproc/emmc2 on Pi 4). The kernel has EXT4_FS=m and VIRTIO_BLK=m, so these must be in it.
initrd_modules="virtio_pci virtio_mmio virtio_blk ext4 mmc_block sdhci_iproc bcm2835"
base_recipe="v1 suite=$SUITE mirror=$MIRROR components=main,non-free-firmware variant=important
packages=$packages
modules=$initrd_modules"
key="$(printf '%s' "$base_recipe" | sha256sum | cut -c1-16)"
base="$CACHE/base-$SUITE-arm64-$key.tar"

if [[ -s "$base" ]]; then
	log "base rootfs cached: $base"
else
	mkdir -p "$CACHE"
	log "building base rootfs (mmdebstrap, several minutes) -> $base"
	start=$SECONDS
	# MODULES=list lives in conf.d and the list in modules.d: neither is a dpkg conffile, so the
	# seed survives initramfs-tools' installation and the first initramfs is already small
	# (MODULES=most takes ~15 min per build under qemu-user).
	mmdebstrap --mode=root --arch=arm64 --variant=important \
		--components=main,non-free-firmware \
		--include="$packages" \
		--essential-hook='mkdir -p "$1/boot/firmware"' \
		--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"' \
		--setup-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/printgate-modules.conf"' \
		--setup-hook="printf '%s\n' $initrd_modules > \"\$1/usr/share/initramfs-tools/modules.d/printgate.conf\"" \
		--format=tar "$SUITE" "$base.tmp" "$MIRROR"
	mv "$base.tmp" "$base"
	printf '%s\n' "$base_recipe" > "$base.recipe"
	log "base rootfs built in $((SECONDS - start)) s"
fi
$base_only && exit 0

if (($# == 0)); then
	log "no .deb given: deploy/dist.sh --deb"
	start=$SECONDS
	mapfile -t built < <("$here/../dist.sh" --deb | grep '_arm64\.deb$')
	((${#built[@]} == 1)) || die "deploy/dist.sh --deb made no single arm64 .deb"
	log "release builds and packages in $((SECONDS - start)) s"
	set -- "${built[@]}"
fi
debs=()
for d in "$@"; do
	[[ -f "$d" ]] || die "no such .deb: $d"
	debs+=("$(cd "$(dirname "$d")" && pwd)/$(basename "$d")")
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
work="$OUT/work"
rm -rf "$work"
mkdir -p "$work/rootfs"
trap 'rm -rf "$work"' EXIT

start=$SECONDS
log "unpacking base rootfs"
tar --numeric-owner -xpf "$base" -C "$work/rootfs"

log "customize.sh ${debs[*]}"
"$here/customize.sh" "$work/rootfs" "${debs[@]}"

log "kernel and initrd for the qemu boot test"
cp -L "$work/rootfs/vmlinuz" "$OUT/vmlinuz"
cp -L "$work/rootfs/initrd.img" "$OUT/initrd.img"

log "boot partition (FAT, label BOOTFS)"
rm -f "$work/boot.vfat"
mkfs.vfat -C -n BOOTFS "$work/boot.vfat" $((256 * 1024)) >/dev/null
mcopy -s -i "$work/boot.vfat" "$work/rootfs/boot/firmware/"* ::/
find "$work/rootfs/boot/firmware" -mindepth 1 -delete

log "root partition (ext4, label rootfs)"
mkfs.ext4 -q -F -L rootfs -d "$work/rootfs" "$work/root.ext4" 1600M

log "genimage"
cat > "$work/genimage.cfg" <<CFG
image sdcard.img {
	hdimage {
		partition-table-type = "mbr"
		disk-signature = 0x7072696e
	}
	partition boot {
		partition-type = 0xC
		bootable = "true"
		image = "boot.vfat"
		offset = 4M
	}
	partition rootfs {
		partition-type = 0x83
		image = "root.ext4"
	}
}
CFG
rm -rf "$work/genimage-tmp"
mkdir -p "$work/empty"
genimage --config "$work/genimage.cfg" --rootpath "$work/empty" --tmppath "$work/genimage-tmp" \
	--inputpath "$work" --outputpath "$OUT" >"$work/genimage.log" 2>&1 || { cat "$work/genimage.log" >&2; die "genimage failed"; }
log "built $OUT/sdcard.img in $((SECONDS - start)) s (after the base)"
