#!/usr/bin/env bash
# Fetches what the boot tests need, through the machine's own APT configuration: Debian's cloud
# kernel (NVMe and ext4 built in), busybox-static and systemd-boot-efi (amd64). Unpacked with
# dpkg-deb into target/boot-inputs/ (a test input; kiln itself never runs dpkg):
#   vmlinuz, busybox, systemd-bootx64.efi, debs/*.deb, root/ (every package unpacked).
# Prints the directory.
#
# The directory is shared by concurrent test runs (worktrees link to one copy), so it is never
# seen half-made: a new one is built in a temp dir and renamed into place; an older one (marker
# `done`, no systemd-boot) gets only the new files added, each by a rename. Readers of the old
# files are not disturbed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/target/boot-inputs"
MARK=done-v2
if [ -f "$OUT/$MARK" ]; then echo "$OUT"; exit 0; fi
mkdir -p "$ROOT/target"
REAL=$(readlink -f "$OUT")
mkdir -p "$(dirname "$REAL")"
TMP=$(mktemp -d "$(dirname "$REAL")/.boot-inputs.XXXXXX")
chmod 755 "$TMP" # apt-get download runs as _apt where it can
trap 'rm -rf "$TMP"' EXIT

kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "boot-inputs: no linux-image-cloud-amd64 in the APT lists (apt-get update?)" >&2; exit 1; }

if [ -f "$REAL/done" ]; then
  # The previous version: kernel and busybox are there and in use; add systemd-boot.
  mkdir -p "$TMP/debs" "$TMP/root"
  (cd "$TMP/debs" && apt-get download -q systemd-boot-efi >/dev/null)
  dpkg-deb -x "$TMP"/debs/systemd-boot-efi_*.deb "$TMP/root"
  cp "$TMP/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$TMP/systemd-bootx64.efi"
  dpkg-deb -x "$TMP"/debs/systemd-boot-efi_*.deb "$REAL/root"
  mv "$TMP"/debs/systemd-boot-efi_*.deb "$REAL/debs/"
  mv "$TMP/systemd-bootx64.efi" "$REAL/systemd-bootx64.efi"
  touch "$REAL/$MARK"
  echo "$OUT"
  exit 0
fi

mkdir -p "$TMP/debs" "$TMP/root"
(cd "$TMP/debs" && apt-get download -q "$kernel_pkg" busybox-static systemd-boot-efi >/dev/null)
for d in "$TMP"/debs/*.deb; do dpkg-deb -x "$d" "$TMP/root"; done
cp "$TMP"/root/boot/vmlinuz-* "$TMP/vmlinuz"
cp "$TMP/root/bin/busybox" "$TMP/busybox"
cp "$TMP/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$TMP/systemd-bootx64.efi"
touch "$TMP/done" "$TMP/$MARK"
if mv -T "$TMP" "$REAL" 2>/dev/null; then
  trap - EXIT
elif [ ! -f "$REAL/$MARK" ]; then
  # Something else is there (a partial directory from an interrupted older script): replace it.
  OLD="$REAL.old.$$"
  mv -T "$REAL" "$OLD" && mv -T "$TMP" "$REAL" && trap - EXIT && rm -rf "$OLD"
fi
echo "$OUT"
