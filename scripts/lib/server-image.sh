#!/usr/bin/env bash
# A Debian bookworm server image made the conventional way, as a test fixture and as the
# baseline of scripts/bench-boot: mmdebstrap (maintainer scripts really run, as root) with the
# cloud kernel, systemd, udev, OpenSSH, cloud-init (EC2 datasource, default user `admin`),
# amazon-ec2-utils, cloud-guest-utils, netplan + systemd-networkd and nginx; then a GPT disk made
# with host tools: sfdisk, mkfs.vfat + mcopy (systemd-boot as BOOTX64.EFI, a loader entry, the
# kernel), mke2fs -d for the root. No SSH host key is baked in (cloud-init makes them on first
# boot), /etc/machine-id is empty, as in Debian's own EC2 images.
#
#   server-image.sh [VARIANT...]   builds what is missing, prints one image path per variant
#
# Variants (each a copy of the root filesystem changed with debugfs, then its own disk):
#   good           the image as described
#   broken-nginx   an nginx configuration that `nginx -t` refuses: nginx.service fails at boot
#
# Needs root (mmdebstrap's root mode; the tree holds files of many owners). Cached under
# target/server-image/<key>/ where <key> hashes this script and boot-inputs' kernel: delete the
# directory to rebuild. Concurrent callers wait for one build (flock).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(good)

[ "$(id -u)" -eq 0 ] || { echo "server-image: needs root (mmdebstrap --mode=root, mke2fs -d of a tree with many owners)" >&2; exit 1; }
for t in mmdebstrap:mmdebstrap sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mke2fs:e2fsprogs debugfs:e2fsprogs; do
  command -v "${t%%:*}" >/dev/null || { echo "server-image: ${t%%:*} is missing (apt-get install ${t##*:})" >&2; exit 1; }
done

INPUTS=$("$ROOT/scripts/lib/boot-inputs.sh")
KEY=$( (cat "${BASH_SOURCE[0]}"; sha256sum "$INPUTS/systemd-bootx64.efi") | sha256sum | cut -c1-16)
OUT="$ROOT/target/server-image/$KEY"
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

PACKAGES=(
  linux-image-cloud-amd64 systemd-sysv udev dbus libpam-systemd libnss-myhostname
  systemd-resolved systemd-timesyncd netplan.io iproute2 netbase
  openssh-server sudo cloud-init cloud-guest-utils amazon-ec2-utils curl ca-certificates
  e2fsprogs fdisk gdisk nginx
)
# The disk: 1 MiB gap, a 64 MiB ESP, the root to the end; the GUIDs are fixed so the loader
# entry and fstab can name the root by PARTUUID (as kiln's images do).
SIZE_MIB=2048
ESP_MIB=64
ROOT_PARTUUID=6b696c6e-7365-7276-6572-000000000002
ESP_PARTUUID=6b696c6e-7365-7276-6572-000000000001
DISK_GUID=6b696c6e-7365-7276-6572-000000000000

sources() {
  # The machine's own APT sources (never a mirror named here), or $KILN_DEBIAN_MIRROR.
  if [ -n "${KILN_DEBIAN_MIRROR:-}" ]; then
    echo "deb $KILN_DEBIAN_MIRROR bookworm main"
  elif compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    cat /etc/apt/sources.list.d/*.sources
  else
    cat /etc/apt/sources.list
  fi
}

make_rootfs() {
  [ -f "$OUT/rootfs.done" ] && return
  rm -rf "$OUT/rootfs"
  local src; src=$(mktemp "$OUT/.sources.XXXXXX")
  sources >"$src"
  case "$(head -c 200 "$src")" in *Types:*) mv "$src" "$src.sources"; src="$src.sources";; *) mv "$src" "$src.list"; src="$src.list";; esac
  local aptopts=()
  for f in /etc/apt/apt.conf.d/*; do aptopts+=(--aptopt="$f"); done
  echo "server-image: mmdebstrap (a few minutes)" >&2
  mmdebstrap --mode=root --variant=apt --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    "${aptopts[@]}" --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='truncate -s 0 "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id "$1"/etc/hostname' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$OUT/rootfs" "$src" >&2
  rm -f "$src"
  configure_rootfs "$OUT/rootfs"
  touch "$OUT/rootfs.done"
}

# What Debian's EC2 images configure (debian-cloud-images, config_space/bookworm), kept small.
configure_rootfs() {
  local r=$1
  cat >"$r/etc/fstab" <<EOF
PARTUUID=$ROOT_PARTUUID / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1
PARTUUID=$ESP_PARTUUID /boot/efi vfat defaults 0 2
EOF
  mkdir -p "$r/boot/efi"
  # locale: C.UTF-8 needs no locale-gen (Debian's locale-gen ignores cloud-init's argument, so
  # the default en_US.UTF-8 makes cloud-config.service fail and the system degraded).
  cat >"$r/etc/cloud/cloud.cfg.d/01_debian_cloud.cfg" <<'EOF'
apt:
  generate_mirrorlists: true
locale: C.UTF-8
system_info:
  default_user:
    name: admin
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    lock_passwd: True
    gecos: Debian
    groups: [adm, audio, cdrom, dialout, dip, floppy, plugdev, sudo, video]
EOF
  echo 'datasource_list: [ Ec2, None ]' >"$r/etc/cloud/cloud.cfg.d/90_dpkg.cfg"
  mkdir -p "$r/etc/systemd/timesyncd.conf.d"
  printf '[Time]\nFallbackNTP=169.254.169.123\n' >"$r/etc/systemd/timesyncd.conf.d/ec2.conf"
  printf 'PasswordAuthentication no\n' >"$r/etc/ssh/sshd_config.d/50-cloud.conf"
  echo '<html><body><h1>Welcome to the kiln server fixture</h1></body></html>' \
    >"$r/var/www/html/index.html"
  ln -sf ../run/systemd/resolve/resolv.conf "$r/etc/resolv.conf"
  chroot "$r" systemctl enable systemd-networkd systemd-resolved >/dev/null 2>&1
}

make_root_fs() {
  [ -f "$OUT/root.img.done" ] && return
  local sectors=$(( (SIZE_MIB - 1 - ESP_MIB) * 2048 - 34 ))
  sectors=$(( sectors / 2048 * 2048 ))
  rm -f "$OUT/root.img"
  mke2fs -q -F -t ext4 -L root -U 6b696c6e-7365-7276-6572-0000000000f5 -E root_owner=0:0 \
    -d "$OUT/rootfs" "$OUT/root.img" $((sectors / 2))k
  echo "$sectors" >"$OUT/root.sectors"
  touch "$OUT/root.img.done"
}

make_esp() {
  [ -f "$OUT/esp.img.done" ] && return
  local d="$OUT/esp"; rm -rf "$d" "$OUT/esp.img"
  mkdir -p "$d/EFI/BOOT" "$d/loader/entries"
  cp "$INPUTS/systemd-bootx64.efi" "$d/EFI/BOOT/BOOTX64.EFI"
  cp "$OUT"/rootfs/boot/vmlinuz-* "$d/vmlinuz"
  printf 'timeout 0\ndefault debian.conf\n' >"$d/loader/loader.conf"
  printf 'title Debian (kiln fixture)\nlinux /vmlinuz\noptions root=PARTUUID=%s rw console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295 panic=-1\n' \
    "$ROOT_PARTUUID" >"$d/loader/entries/debian.conf"
  mkfs.vfat -F 32 -i 4b494c4e -C "$OUT/esp.img" $((ESP_MIB * 1024)) >/dev/null
  mcopy -s -i "$OUT/esp.img" "$d"/* ::/
  touch "$OUT/esp.img.done"
}

# variant NAME: what makes it differ from `good`, applied to a copy of root.img with debugfs.
variant_change() {
  local name=$1 img=$2
  case "$name" in
    good) ;;
    broken-nginx)
      printf 'this_is_not_an_nginx_directive on;\n' >"$OUT/broken.conf"
      debugfs -w -R "write $OUT/broken.conf /etc/nginx/conf.d/broken.conf" "$img" >/dev/null 2>&1
      debugfs -R "cat /etc/nginx/conf.d/broken.conf" "$img" 2>/dev/null | grep -q this_is_not \
        || { echo "server-image: debugfs did not write the broken nginx configuration" >&2; exit 1; }
      ;;
    *) echo "server-image: unknown variant $name (good, broken-nginx)" >&2; exit 2 ;;
  esac
}

make_disk() {
  local name=$1 disk="$OUT/$1.raw"
  [ -f "$disk" ] && return
  local sectors; sectors=$(cat "$OUT/root.sectors")
  local tmp="$OUT/.$name.raw.tmp" root="$OUT/.$name.root.img"
  rm -f "$tmp" "$root"
  cp --sparse=always "$OUT/root.img" "$root"
  variant_change "$name" "$root"
  truncate -s "${SIZE_MIB}M" "$tmp"
  local root_start=$(( (1 + ESP_MIB) * 2048 ))
  printf 'label: gpt\nlabel-id: %s\nstart=2048, size=%d, type=uefi, uuid=%s, name=esp\nstart=%d, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=%s, name=root\n' \
    "$DISK_GUID" $((ESP_MIB * 2048)) "$ESP_PARTUUID" "$root_start" "$sectors" "$ROOT_PARTUUID" | sfdisk -q "$tmp"
  dd if="$OUT/esp.img" of="$tmp" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$root" of="$tmp" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none
  rm -f "$root"
  chmod 644 "$tmp"
  mv "$tmp" "$disk"
}

missing=0
for v in "${VARIANTS[@]}"; do [ -f "$OUT/$v.raw" ] || missing=1; done
if ((missing)); then
  make_rootfs
  make_root_fs
  make_esp
  for v in "${VARIANTS[@]}"; do make_disk "$v"; done
  # The root filesystem image is only an intermediate (disk space is shared): made again if a
  # new variant is asked for.
  rm -f "$OUT/root.img" "$OUT/root.img.done"
fi
for v in "${VARIANTS[@]}"; do echo "$OUT/$v.raw"; done
