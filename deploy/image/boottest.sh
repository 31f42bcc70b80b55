#!/usr/bin/env bash
# Boot test of the track B image under qemu-system-aarch64 -M virt (TCG):
#
#   deploy/image/boottest.sh [IMAGE_DIR]      (default out/image, made by build.sh)
#
# Boot 1 (fresh card, printgate.txt on the boot partition):
#   the serial log shows printgate.service started (READY=1) and the admin QR; the console QR
#   (turned back into an image by deploy/image/qrconsole) decodes with zbarimg into a wg-quick
#   config; the PNG on the boot partition (read with mcopy) decodes to the same config; Debian's
#   wg-quick (kernel WireGuard or wireguard-go) brings it up in a network namespace made here and
#   curl reaches the gateway's tunnel address through qemu's UDP forward; the QR files are then
#   removed from the boot partition (an admin has joined).
# Boot 2 (same card): the service starts again, prints no QR, and the same admin config still
#   reaches the gateway: the gateway kept its key and its roster. A frozen daemon is killed by
#   the watchdog and restarted; the sandbox is checked from the root shell on the serial
#   console (no capability, NoNewPrivs, read-only /etc).
# At rest: the admin's private key is neither in /var/lib/printgate nor in the journal.
#
# Hermetic network: qemu runs in a network namespace of its own ("the LAN"), joined by one veth
# pair to a second namespace that plays the phone; neither has a route anywhere else, so the
# guest's user-mode network reaches nothing but the phone, and the host's namespace sees no
# traffic at all. (qemu's restrict=on is no option: libslirp then drops every UDP datagram
# from the guest, the WireGuard replies included.) Each boot has a hard timeout.
# Needs root, qemu-system-arm, ipxe-qemu (or romfile=), mtools, zbar-tools, wireguard-tools,
# wireguard-go, iproute2, curl, socat, go.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
img_dir="$(cd "${1:-$repo/out/image}" && pwd)"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-420}"   # hard limit per boot, seconds
QR_TIMEOUT="${QR_TIMEOUT:-300}"       # boot 1: qemu start -> QR on the console
GUEST_PORT=51820

t0=$SECONDS
log() { printf '%s boottest [%3ds]: %s\n' "$(date +%T)" $((SECONDS - t0)) "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespace, veth)"
for tool in qemu-system-aarch64 mcopy mdir partx debugfs journalctl zbarimg wg wg-quick ip curl socat go timeout; do
	command -v "$tool" >/dev/null || die "missing $tool"
done
for f in sdcard.img vmlinuz initrd.img; do
	[[ -f "$img_dir/$f" ]] || die "no $img_dir/$f: run deploy/image/build.sh first"
done

work="$(mktemp -d /tmp/pgboot.XXXXXX)"
suffix="$(printf '%04x%02x' $RANDOM $((RANDOM % 256)))"
ns="pgbt-$suffix"     # the phone
qns="pgbq-$suffix"    # qemu's LAN
veth_host="pgbh$suffix"
veth_ns="pgbn$suffix"
wgif="pgwg$suffix"
# A /30 for the veth pair and a /24 mesh prefix, both picked at random in 10.200-249.x.
o2=$((200 + RANDOM % 50)); o3=$((RANDOM % 256))
host_ip="10.$o2.$o3.1"; ns_ip="10.$o2.$o3.2"
mesh_prefix="10.$((o2 + 1)).$o3.0/24"; gw_tunnel="10.$((o2 + 1)).$o3.1"
qemu_pid=""

cleanup() {
	set +e
	[[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
	if [[ -e "/run/netns/$ns" ]]; then
		ip netns exec "$ns" wg-quick down "$work/$wgif.conf" >/dev/null 2>&1
		ip netns pids "$ns" | xargs -r kill 2>/dev/null
		ip netns del "$ns"
	fi
	if [[ -e "/run/netns/$qns" ]]; then
		ip netns pids "$qns" | xargs -r kill 2>/dev/null
		ip netns del "$qns"
	fi
	rm -f "/var/run/wireguard/$wgif.sock"
	if [[ -n "${KEEP:-}" ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# qemu's namespace and the phone's, joined by one veth pair and nothing else.
ip netns add "$qns"
ip netns add "$ns"
ip link add "$veth_host" netns "$qns" type veth peer name "$veth_ns" netns "$ns"
ip netns exec "$qns" ip addr add "$host_ip/30" dev "$veth_host"
ip netns exec "$qns" ip link set "$veth_host" up
ip netns exec "$qns" ip link set lo up
ip netns exec "$ns" ip addr add "$ns_ip/30" dev "$veth_ns"
ip netns exec "$ns" ip link set "$veth_ns" up
ip netns exec "$ns" ip link set lo up
host_port=$((20000 + RANDOM % 40000))
log "phone netns $ns ($ns_ip) -> qemu netns $qns ($host_ip:$host_port, hostfwd) -> guest udp $GUEST_PORT; mesh $mesh_prefix"

(cd "$repo/deploy" && go build -o "$work/qrconsole" ./image/qrconsole) # deploy/ is its own module

# The card: a copy of the built image (sparse), with the owner's settings file.
cp --sparse=always "$img_dir/sdcard.img" "$work/sdcard.img"
boot_off=$(( $(partx -g -o START -n 1 "$work/sdcard.img") * 512 ))
fat="$work/sdcard.img@@$boot_off"
cat > "$work/printgate.txt" <<TXT
# printgate owner settings (boot test)
endpoint=$host_ip:$host_port
prefix=$mesh_prefix
TXT
mcopy -o -i "$fat" "$work/printgate.txt" ::printgate.txt

# boot N: start qemu in the background with its serial console logged to serialN.log.
boot() {
	local n="$1"
	: > "$work/serial$n.log"
	timeout --kill-after=10 "$BOOT_TIMEOUT" ip netns exec "$qns" qemu-system-aarch64 \
		-M virt -cpu cortex-a72 -smp 2 -m 1024 \
		-kernel "$img_dir/vmlinuz" -initrd "$img_dir/initrd.img" \
		-append "console=ttyAMA0 root=LABEL=rootfs rw rootwait net.ifnames=0 panic=-1" \
		-drive if=none,id=d0,file="$work/sdcard.img",format=raw \
		-device virtio-blk-pci,drive=d0 \
		-device virtio-rng-pci \
		-netdev "user,id=n0,hostfwd=udp:$host_ip:$host_port-:$GUEST_PORT" \
		-device virtio-net-pci,netdev=n0,romfile= \
		-display none -monitor "unix:$work/monitor.sock,server=on,wait=off" \
		-chardev "socket,id=ser0,path=$work/serial.sock,server=on,wait=off,logfile=$work/serial$n.log" \
		-serial chardev:ser0 -no-reboot &
	qemu_pid=$!
	boot_start=$SECONDS
	log "boot $n: qemu pid $qemu_pid (hard limit ${BOOT_TIMEOUT}s)"
}

# wait_log N PATTERN LIMIT: wait until serialN.log matches PATTERN, at most until LIMIT seconds
# after qemu started; prints the seconds since qemu started.
wait_log() {
	local n="$1" pattern="$2" limit="$3"
	while ! grep -aq -- "$pattern" "$work/serial$n.log"; do
		kill -0 "$qemu_pid" 2>/dev/null || { tail -40 "$work/serial$n.log" >&2; die "boot $n: qemu exited before '$pattern'"; }
		((SECONDS - boot_start < limit)) || { tail -40 "$work/serial$n.log" >&2; die "boot $n: no '$pattern' within ${limit}s"; }
		sleep 1
	done
	echo $((SECONDS - boot_start))
}

# console CMD: type a command into the root shell on the serial console (autologin there),
# 16 characters at a time: the emulated UART has a small FIFO and no flow control.
console() {
	local cmd="$1"$'\r' i
	{
		for ((i = 0; i < ${#cmd}; i += 16)); do
			printf '%s' "${cmd:i:16}"
			sleep 0.05
		done
	} | socat -t 2 - "UNIX-CONNECT:$work/serial.sock" >/dev/null 2>&1 || true
}

# wait_ready N LIMIT: wait until printgate.service is active (READY=1 sent) and print the
# seconds since qemu started. systemd's "Started printgate.service" status line is the signal,
# but agetty flushes the console's output queue when it starts on it, which can swallow that
# line; once the root shell is up, the test also asks systemctl through the serial console.
wait_ready() {
	local n="$1" limit="$2"
	while ! grep -aq -e 'Started .*printgate\.service' -e 'pgready-active' "$work/serial$n.log"; do
		kill -0 "$qemu_pid" 2>/dev/null || { tail -40 "$work/serial$n.log" >&2; die "boot $n: qemu exited before printgate.service was ready"; }
		((SECONDS - boot_start < limit)) || { tail -40 "$work/serial$n.log" >&2; die "boot $n: printgate.service not ready within ${limit}s"; }
		if grep -aq 'printgate login: root (automatic login)' "$work/serial$n.log"; then
			console 'echo "pgready-$(systemctl is-active printgate.service)"'
		fi
		sleep 2
	done
	echo $((SECONDS - boot_start))
}

shutdown_vm() {
	local n="$1"
	echo system_powerdown | socat - "UNIX-CONNECT:$work/monitor.sock" >/dev/null 2>&1 || true
	local deadline=$((SECONDS + 90))
	while kill -0 "$qemu_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
	if kill -0 "$qemu_pid" 2>/dev/null; then
		log "boot $n: no clean power-off within 90 s; stopping qemu"
		echo quit | socat - "UNIX-CONNECT:$work/monitor.sock" >/dev/null 2>&1 || kill "$qemu_pid"
	fi
	wait "$qemu_pid" 2>/dev/null || true
	qemu_pid=""
	rm -f "$work/monitor.sock" "$work/serial.sock"
	log "boot $n: powered off"
}

# tunnel_check CONF: wg-quick up CONF in the namespace, curl the gateway's tunnel address.
tunnel_check() {
	local conf="$1"
	# DNS= would make wg-quick call resolvconf, which the namespace does not need.
	grep -v '^DNS *=' "$conf" > "$work/$wgif.conf"
	chmod 600 "$work/$wgif.conf"
	ip netns exec "$ns" env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go \
		WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wg-quick up "$work/$wgif.conf" >"$work/wg-quick.log" 2>&1 ||
		{ cat "$work/wg-quick.log" >&2; die "wg-quick up"; }
	local code="000" deadline=$((SECONDS + 60))
	while ((SECONDS < deadline)); do
		code="$(ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://$gw_tunnel/" 2>/dev/null || true)"
		[[ "$code" != "000" && -n "$code" ]] && break
		sleep 2
	done
	ip netns exec "$ns" wg show "$wgif" >&2 || true
	ip netns exec "$ns" wg-quick down "$work/$wgif.conf" >/dev/null 2>&1 || true
	[[ "$code" != "000" && -n "$code" ]] || die "no HTTP answer from $gw_tunnel through the tunnel"
	log "curl http://$gw_tunnel/ through the tunnel: HTTP $code"
}

# qr_files: does the boot partition hold printgate-admin.* ? (no pipe into grep -q: pipefail)
qr_files() {
	mdir -b -i "$fat" :: > "$work/mdir.txt" 2>/dev/null || true
	grep -qi 'printgate-admin' "$work/mdir.txt"
}

check_conf() { # a wg-quick config for this gateway
	local c="$1"
	for want in '^\[Interface\]' '^PrivateKey *= *[A-Za-z0-9+/]\{42,43\}=' '^Address *=' '^\[Peer\]' \
		'^PublicKey *= *[A-Za-z0-9+/]\{42,43\}=' '^AllowedIPs *=' "^Endpoint *= *$host_ip:$host_port\$"; do
		grep -q -- "$want" "$c" || { cat "$c" >&2; die "config lacks $want"; }
	done
}

# ---- boot 1 --------------------------------------------------------------------------------
boot 1
ready1=$(wait_ready 1 "$QR_TIMEOUT")
log "boot 1: printgate.service ready (READY=1) after ${ready1}s"
qr1=$(wait_log 1 '-----END PRINTGATE ADMIN QR-----' "$QR_TIMEOUT")
log "boot 1: admin QR on the console after ${qr1}s"

"$work/qrconsole" "$work/serial1.log" "$work/console.png"
zbarimg --raw -q -Sbinary "$work/console.png" > "$work/console.conf" || die "zbarimg could not decode the console QR"
check_conf "$work/console.conf"
log "boot 1: console QR decodes to a wg-quick config ($(wc -c < "$work/console.conf") bytes)"

mcopy -n -i "$fat" ::printgate-admin.png "$work/boot.png" || die "no printgate-admin.png on the boot partition"
mcopy -n -i "$fat" ::printgate-admin.conf "$work/boot.conf" || die "no printgate-admin.conf on the boot partition"
zbarimg --raw -q -Sbinary "$work/boot.png" > "$work/png.conf" || die "zbarimg could not decode printgate-admin.png"
cmp -s "$work/png.conf" "$work/console.conf" || die "PNG QR and console QR differ"
cmp -s "$work/boot.conf" "$work/console.conf" || die "printgate-admin.conf and the console QR differ"
log "boot 1: boot-partition PNG and .conf carry the same config"

tunnel_check "$work/console.conf"

deadline=$((SECONDS + 60))
while qr_files; do
	((SECONDS < deadline)) || die "QR files still on the boot partition 60 s after the admin joined"
	sleep 2
done
log "boot 1: admin joined; QR files removed from the boot partition"
shutdown_vm 1

# ---- boot 2 --------------------------------------------------------------------------------
boot 2
ready2=$(wait_ready 2 "$BOOT_TIMEOUT")
log "boot 2: printgate.service ready after ${ready2}s"
tunnel_check "$work/console.conf"
if grep -aq -- '-----BEGIN PRINTGATE ADMIN QR-----' "$work/serial2.log"; then
	die "boot 2 printed an admin QR although an admin is active"
fi
if qr_files; then
	die "boot 2 wrote QR files although an admin is active"
fi
log "boot 2: same gateway key and roster (the boot-1 config still works), no QR shown"

# The watchdog: freeze the daemon (SIGSTOP); systemd must kill and restart it within
# WatchdogSec (30 s) + RestartSec, and the restarted daemon must be ready again.
wait_log 2 'printgate login: root (automatic login)' $((SECONDS - boot_start + 60)) >/dev/null
# (the output "pgwd-stopped-2" differs from the echoed command line "pgwd-stopped-$((1+1))")
console 'systemctl kill -s STOP printgate.service; echo "pgwd-stopped-$((1+1))"'
wait_log 2 'pgwd-stopped-2' $((SECONDS - boot_start + 30)) >/dev/null
deadline=$((SECONDS + 120))
while :; do
	console 'echo "pgwd-state=$(systemctl show -p NRestarts --value printgate.service)-$(systemctl is-active printgate.service)"'
	sleep 5
	grep -aq 'pgwd-state=1-active' "$work/serial2.log" && break
	((SECONDS < deadline)) || { tail -20 "$work/serial2.log" >&2; die "no watchdog restart within 120 s of freezing the daemon"; }
done
log "boot 2: frozen daemon killed by the watchdog and restarted (NRestarts=1, active)"

# The sandbox as the kernel sees it (threats.md (c)): no capability, no new privileges, and a
# read-only /etc in the service's mount namespace. Each check prints a marker that the echoed
# command line does not contain, and only its passing branch prints it.
check() { # CMD MARKER: run CMD on the console, wait for MARKER in its output
	console "$1"
	wait_log 2 "$2" $((SECONDS - boot_start + 30)) >/dev/null
}
check 'p=$(systemctl show -p MainPID --value printgate.service)' 'printgate:~#'
check 'echo "pgcap-$(awk '"'"'/^(CapEff|CapBnd|NoNewPrivs):/{printf "%s%s,", $1, $2}'"'"' /proc/$p/status)"' \
	'pgcap-CapEff:0000000000000000,CapBnd:0000000000000000,NoNewPrivs:1,'
check 'nsenter -t $p -m sh -c "touch /etc/pgx 2>/dev/null || echo pgetc-\$((1+1))"' 'pgetc-2'
# DevicePolicy=closed is a BPF program on the service's cgroup. A root shell moved into the
# cgroup of a plain transient service reads the disk (the control: moving a shell between
# cgroups blocks nothing by itself); moved into printgate's cgroup it may not open it.
check 'systemd-run -q --unit=pgprobe sleep 600; sh -c "echo \$\$ >/sys/fs/cgroup/system.slice/pgprobe.service/cgroup.procs && head -c1 /dev/vda >/dev/null && echo pgdevc-\$((4+4))"; systemctl stop pgprobe' 'pgdevc-8'
check 'sh -c "echo \$\$ >/sys/fs/cgroup\$(systemctl show -p ControlGroup --value printgate.service)/cgroup.procs && { head -c1 /dev/vda >/dev/null 2>&1 && echo pgdev-open || echo pgdev-\$((2+3)); }"' 'pgdev-5'
log "boot 2: sandbox holds: CapEff 0, CapBnd 0, NoNewPrivs 1, /etc read-only in the service's mount namespace, the disk closed to the service's cgroup"
tunnel_check "$work/console.conf"
shutdown_vm 2

# ---- at rest: the admin's private key is on no disk ------------------------------------------
# The QR went to the console only (StandardOutput=tty), never into the journal, and the state
# directory keeps no device private key (DESIGN.md invariant 4).
root_off=$(( $(partx -g -o START -n 2 "$work/sdcard.img") * 512 ))
ext="$work/sdcard.img?offset=$root_off"
mkdir -p "$work/rest"
debugfs -R "rdump /var/lib/printgate $work/rest" "$ext" >/dev/null 2>&1 || die "cannot read /var/lib/printgate from the image"
debugfs -R "rdump /var/log/journal $work/rest" "$ext" >/dev/null 2>&1 || true
[[ -n "$(ls -A "$work/rest/printgate")" ]] || die "/var/lib/printgate is empty after two boots"
key="$(sed -n 's/^PrivateKey *= *//p' "$work/console.conf")"
[[ -n "$key" ]] || die "no PrivateKey in the admin config"
if grep -r -a -q -F -- "$key" "$work/rest"; then
	die "the admin's private key is stored on the root file system"
fi
if [[ -d "$work/rest/journal" ]]; then
	journalctl -D "$work/rest/journal" -o cat --no-pager > "$work/journal.txt" 2>/dev/null || true
	if grep -a -q -F -e "$key" -e 'BEGIN PRINTGATE ADMIN QR' "$work/journal.txt" "$work/rest/journal" -r; then
		die "the admin QR or key reached the journal"
	fi
	log "at rest: no admin key in /var/lib/printgate nor the journal ($(wc -l < "$work/journal.txt") journal lines checked)"
else
	log "at rest: no admin key in /var/lib/printgate (no persistent journal)"
fi

log "PASS: boot-to-ready ${ready1}s, boot-to-QR ${qr1}s, second boot ready ${ready2}s, total $((SECONDS - t0))s"
