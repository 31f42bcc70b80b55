#!/usr/bin/env bash
# Turn a Debian (track B) or Raspberry Pi OS Lite (track A) arm64 root filesystem into a
# printgate appliance:
#
#   deploy/image/customize.sh ROOTFS DEB...
#
# Installs the .deb(s) with dpkg inside ROOTFS (under qemu-user on a non-arm64 host), then
# writes fstab (LABEL= entries, long device timeouts), the hostname, systemd-networkd DHCP on
# wired interfaces, console autologin (physical access is owner access, see docs/appliance.md),
# and the service's appliance drop-in (first boot on the boot partition). It bakes in no
# secret: no keys, no passwords, no machine-id; the gateway makes its key on first boot.
#
# Track A runs the same script from a pi-gen stage (stageX/00-run.sh: customize.sh
# "${ROOTFS_DIR}" files/*.deb); Raspberry Pi OS has its own cmdline.txt, which it leaves alone.
set -euo pipefail

log() { printf '%s customize.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

(($# >= 2)) || die "usage: $0 ROOTFS DEB..."
root="$1"
shift
[[ -d "$root/etc" && -x "$root/usr/bin/dpkg" ]] || die "$root is not a Debian root filesystem"
[[ $(id -u) == 0 ]] || die "needs root (chroot, file ownership)"

hostname="${PRINTGATE_HOSTNAME:-printgate}"
boot_label="${BOOT_LABEL:-BOOTFS}"
root_label="${ROOT_LABEL:-rootfs}"

# 1. The package. dpkg runs inside the root filesystem, so its maintainer scripts create the
# user and enable the unit exactly as on a Pi. No systemd runs in the chroot, so nothing starts.
mkdir -p "$root/tmp/printgate-debs"
for d in "$@"; do
	[[ -f "$d" ]] || die "no such .deb: $d"
	cp "$d" "$root/tmp/printgate-debs/"
done
log "dpkg -i $*"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	sh -c 'dpkg -i /tmp/printgate-debs/*.deb'
rm -rf "$root/tmp/printgate-debs"
[[ -L "$root/etc/systemd/system/multi-user.target.wants/printgate.service" ]] ||
	die "printgate.service is not enabled after dpkg -i"
gid="$(chroot "$root" getent group printgate | cut -d: -f3)"
[[ -n "$gid" ]] || die "no printgate group after dpkg -i"

# 2. Mounts by label, so one image boots from an SD card on a Pi and from virtio in qemu. The
# boot partition is writable by group printgate only: first boot writes the admin QR there.
# The device timeouts are long because slow cards and emulated disks can appear late.
log "fstab"
cat > "$root/etc/fstab" <<FSTAB
# <file system>      <mount point>   <type> <options>                                                                            <dump> <pass>
LABEL=$root_label    /               ext4   defaults,noatime,x-systemd.device-timeout=90s                                        0      1
LABEL=$boot_label    /boot/firmware  vfat   defaults,noatime,uid=0,gid=$gid,fmask=0117,dmask=0007,x-systemd.device-timeout=90s   0      2
FSTAB
mkdir -p "$root/boot/firmware"

# 3. Kernel command line for real Pis (qemu passes its own): root by label, boot log on the
# serial UART, the HDMI console last so /dev/console (the first-boot QR) is the screen.
if [[ -f "$root/etc/default/raspi-firmware" ]]; then
	log "raspi-firmware: ROOTPART=LABEL=$root_label, consoles serial + HDMI"
	sed -i -e "s|^#\?ROOTPART=.*|ROOTPART=\"LABEL=$root_label\"|" \
		-e 's|^#\?CONSOLES=.*|CONSOLES="ttyS1,115200 tty0"|' "$root/etc/default/raspi-firmware"
	# The kernel hook would regenerate cmdline.txt from that file, but it refuses to run in a
	# chroot without /proc; edit the one the base install generated the same way instead.
	cmdline="$root/boot/firmware/cmdline.txt"
	rest="$(tr ' ' '\n' < "$cmdline" | grep -v -e '^console=' -e '^root=' -e '^$' | tr '\n' ' ')"
	echo "console=ttyS1,115200 console=tty0 root=LABEL=$root_label ${rest% }" > "$cmdline"
	grep -q "root=LABEL=$root_label" "$root/boot/firmware/cmdline.txt" || die "cmdline.txt does not name LABEL=$root_label"
fi

# 4. Identity and network: DHCP on any wired interface, online as soon as one link is up.
log "hostname $hostname, systemd-networkd"
echo "$hostname" > "$root/etc/hostname"
cat > "$root/etc/hosts" <<HOSTS
127.0.0.1	localhost
127.0.1.1	$hostname
::1		localhost ip6-localhost ip6-loopback
HOSTS
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=eth* en*

[Network]
DHCP=yes
IPv6AcceptRA=yes
NET
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/printgate.conf" <<'WAIT'
# A LAN-only gateway must not wait two minutes for a link that may never come.
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
WAIT
chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
for unit in systemd-resolved systemd-timesyncd; do
	if [[ -e "$root/lib/systemd/system/$unit.service" ]]; then
		chroot "$root" systemctl enable "$unit" >/dev/null 2>&1
	fi
done
# ifupdown (Priority important) would manage the same interfaces; networkd does it alone.
if [[ -e "$root/lib/systemd/system/networking.service" ]]; then
	chroot "$root" systemctl disable networking >/dev/null 2>&1
fi
if [[ -e "$root/lib/systemd/system/systemd-resolved.service" ]]; then
	ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
fi

# 5. Consoles: the kernel's console= list gets gettys from systemd-getty-generator (serial)
# and getty.target (tty1). Root logs in without a password on these local consoles only: the
# owner recovers a lost admin phone there. There is no network login at all.
log "console autologin (local consoles only)"
for unit in serial-getty@.service getty@.service; do
	mkdir -p "$root/etc/systemd/system/$unit.d"
	cat > "$root/etc/systemd/system/$unit.d/autologin.conf" <<GETTY
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I \$TERM
GETTY
done

# 6. The service on the appliance: first boot reads printgate.txt and writes the admin QR to
# the boot partition, so that (and only that) path becomes writable, after it is mounted.
log "printgate.service appliance drop-in"
mkdir -p "$root/etc/systemd/system/printgate.service.d"
cat > "$root/etc/systemd/system/printgate.service.d/appliance.conf" <<'DROPIN'
# Written by deploy/image/customize.sh: the appliance's first boot (docs/appliance.md).
# Before the console gettys: the login prompts come after the QR, and agetty, which flushes
# the console's pending output when it starts, cannot cut the QR short.
# The appliance makes its own state on first boot (--init): the package unit's condition,
# which waits for the owner's `printgate init`, is reset here.
[Unit]
After=boot-firmware.mount
Before=getty@tty1.service serial-getty@ttyAMA0.service serial-getty@ttyS0.service serial-getty@ttyS1.service
ConditionPathExists=

[Service]
ReadWritePaths=-/boot/firmware
ExecStart=
ExecStart=/usr/bin/printgate run --state /var/lib/printgate --init --boot-dir /boot/firmware $PRINTGATE_ARGS
DROPIN

# 7. No secrets and no per-machine identity in the image.
log "clearing per-machine state"
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/etc/ssh/ssh_host_"* "$root/var/lib/systemd/random-seed"
rm -rf "$root/var/lib/printgate"
find "$root/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete 2>/dev/null || true
rm -rf "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb
log "done"
