#!/usr/bin/env bash
# Fetches what the kernel boot test needs, through the machine's own APT configuration:
# Debian's cloud kernel (NVMe and ext4 built in) and busybox-static. Unpacked with dpkg-deb into
# target/boot-inputs/ (a test input; kiln itself never runs dpkg). Prints the directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/target/boot-inputs"
if [ -f "$OUT/done" ]; then echo "$OUT"; exit 0; fi
rm -rf "$OUT"; mkdir -p "$OUT/debs" "$OUT/root"
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "boot-inputs: no linux-image-cloud-amd64 in the APT lists (apt-get update?)" >&2; exit 1; }
(cd "$OUT/debs" && apt-get download -q "$kernel_pkg" busybox-static >/dev/null)
for d in "$OUT"/debs/*.deb; do dpkg-deb -x "$d" "$OUT/root"; done
cp "$OUT"/root/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$OUT/root/bin/busybox" "$OUT/busybox"
touch "$OUT/done"
echo "$OUT"
