#!/usr/bin/env bash
# Release builds: static printgate binaries and one .deb per Debian architecture.
#
#   deploy/dist.sh [--deb] [VERSION]
#
# dist/printgate_linux_{amd64,arm64,armv6,armv7}, and for `printgate connect` on laptops
# printgate_windows_amd64.exe and printgate_darwin_{arm64,amd64} (CGO_ENABLED=0, -trimpath,
# version stamped into cli.Version), and with --deb dist/printgate_VERSION_{amd64,arm64,armhf}.deb.
# The armhf package carries the GOARMv6 binary, which runs on every Raspberry Pi (Raspberry Pi OS armhf is
# ARMv6) and on Debian armhf. VERSION defaults to `git describe`.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=false
if [[ "${1:-}" == "--deb" ]]; then
	deb=true
	shift
fi
VERSION="${1:-${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}}"
GO="${GO:-go}"
DIST="$(mkdir -p "${DIST:-dist}" && cd "${DIST:-dist}" && pwd)" # absolute: mkdeb builds in deploy/
ldflags="-s -w -X github.com/printgate/printgate/cmd/printgate/cli.Version=$VERSION"

mkdir -p "$DIST"
build() { # NAME GOARCH [GOARM [GOOS [SUFFIX]]]
	local out="$DIST/printgate_${4:-linux}_$1${5:-}"
	local start=$SECONDS
	CGO_ENABLED=0 GOOS="${4:-linux}" GOARCH="$2" GOARM="${3:-}" \
		"$GO" build -trimpath -ldflags "$ldflags" -o "$out.tmp" ./cmd/printgate
	mv "$out.tmp" "$out"
	printf '%s (%d s)\n' "$out" $((SECONDS - start))
}
build amd64 amd64
build arm64 arm64
build armv6 arm 6
build armv7 arm 7
# Laptops (`printgate connect`, no admin rights): Windows and macOS.
build amd64 amd64 "" windows .exe
build arm64 arm64 "" darwin
build amd64 amd64 "" darwin

if $deb; then
	doc=()
	[[ -f docs/appliance.md ]] && doc=(-doc docs/appliance.md)
	(cd deploy && "$GO" build -o "$DIST/.mkdeb" ./mkdeb) # deploy/ is its own module
	"$DIST/.mkdeb" -arch amd64 -version "$VERSION" -bin "$DIST/printgate_linux_amd64" "${doc[@]}" -o "$DIST"
	"$DIST/.mkdeb" -arch arm64 -version "$VERSION" -bin "$DIST/printgate_linux_arm64" "${doc[@]}" -o "$DIST"
	"$DIST/.mkdeb" -arch arm6 -version "$VERSION" -bin "$DIST/printgate_linux_armv6" "${doc[@]}" -o "$DIST"
	rm -f "$DIST/.mkdeb"
fi
