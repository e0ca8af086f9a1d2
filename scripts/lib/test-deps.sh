#!/usr/bin/env bash
# The system tools kiln's tests use as oracles, and how apt installs them (Debian/Ubuntu).
#
#   test-deps.sh check     simulate (apt-get install -s) installing EVERY tool package, as on a
#                          machine that has none of them; one clear line and exit 1 if apt would
#                          refuse. Takes a second or two: scripts/test runs it first.
#   test-deps.sh install   install the packages of the missing tools; print what was installed
#                          and what was already present.
#   test-deps.sh plan      print the apt-get arguments `install` would use (all packages).
#
# KILN_APT_STATUS=FILE makes apt read FILE as dpkg's status instead of /var/lib/dpkg/status
# (a saved machine state: tests/install_path.sh proves the plan on states other than this
# machine's), and then every package counts as missing. Nothing is installed in that mode.
#
# Why the QEMU family is pinned: the project's machine image ships qemu-utils 1:10.0 from
# bookworm-backports, which Breaks qemu-system-common (<< 1:8.0), while bookworm's qemu-system-*
# is 1:7.2. apt never downgrades on its own, so a plain `apt-get install qemu-system-x86` stops
# with "pkgProblemResolver::Resolve generated breaks". kiln's tests need qemu-system (7.2 is
# enough) and qemu-img (any version), so every QEMU package is asked for at qemu-system-x86's
# candidate version, in the same command, with --allow-downgrades. On plain bookworm this is the
# version apt would pick anyway; where everything is installed, nothing is asked for.
set -euo pipefail

# tool → the Debian package that provides it
declare -A TOOLS=(
  [e2fsck]=e2fsprogs [debugfs]=e2fsprogs [mke2fs]=e2fsprogs [dumpe2fs]=e2fsprogs
  [fsck.fat]=dosfstools [mkfs.vfat]=dosfstools
  [mtype]=mtools [mcopy]=mtools
  [sfdisk]=fdisk [sgdisk]=gdisk
  [faketime]=faketime [setpriv]=util-linux [blkid]=util-linux [pwconv]=passwd [grpconv]=passwd
  [qemu-system-x86_64]=qemu-system-x86 [qemu-system-aarch64]=qemu-system-arm [qemu-img]=qemu-utils
  [qemu-aarch64-static]=qemu-user-static
  [qemu-io]=qemu-utils [mmdebstrap]=mmdebstrap
  [dpkg-deb]=dpkg [update-alternatives]=dpkg
  [cpio]=cpio [depmod]=kmod [objdump]=binutils [objcopy]=binutils [zstdcat]=zstd
  [aarch64-linux-gnu-objdump]=binutils-aarch64-linux-gnu
  [ssh]=openssh-client [ssh-keygen]=openssh-client [openssl]=openssl
  [gpg]=gpg [gpgv]=gpgv [gpg-agent]=gpg-agent
  [systemd-sysusers]=systemd [systemctl]=systemd
  [skopeo]=skopeo [umoci]=umoci [docker-registry]=docker-registry
)
# file → Debian package (UEFI firmware, QEMU's NIC option ROMs, Python's venv for moto)
declare -A FILES=(
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf [/usr/share/AAVMF/AAVMF_CODE.fd]=qemu-efi-aarch64
  [/usr/lib/ipxe/qemu/efi-virtio.rom]=ipxe-qemu
)
# The arch-specific packages of one QEMU build (qemu-utils Breaks other versions' qemu-system-common).
# qemu-system-data is Architecture: all, without the binNMU suffix: qemu-system-* accept any later one.
QEMU_FAMILY=(qemu-system-x86 qemu-system-arm qemu-system-common qemu-utils qemu-block-extra qemu-system-gui)

APT_OPTS=()
[ -z "${KILN_APT_STATUS:-}" ] || APT_OPTS=(-o "Dir::State::status=$KILN_APT_STATUS")

all_packages() { printf '%s\n' "${TOOLS[@]}" "${FILES[@]}" | sort -u; }

have_tool() { command -v "$1" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

# The packages of the tools and files this machine lacks (all of them under KILN_APT_STATUS).
missing_packages() {
  if [ -n "${KILN_APT_STATUS:-}" ]; then all_packages; return; fi
  local t f
  { for t in "${!TOOLS[@]}"; do have_tool "$t" || echo "${TOOLS[$t]}"; done
    for f in "${!FILES[@]}"; do [ -f "$f" ] || echo "${FILES[$f]}"; done; } | sort -u
}

present_packages() {
  local t f
  { for t in "${!TOOLS[@]}"; do have_tool "$t" && echo "${TOOLS[$t]}"; done
    for f in "${!FILES[@]}"; do [ -f "$f" ] && echo "${FILES[$f]}"; done; } | sort -u
}

# "package installed candidate" for each QEMU package, from one `apt-cache policy` call.
qemu_policy() {
  apt-cache "${APT_OPTS[@]}" policy "${QEMU_FAMILY[@]}" 2>/dev/null |
    awk '/^[^ ].*:$/ {p = substr($1, 1, length($1) - 1)} $1 == "Installed:" {i[p] = $2}
         $1 == "Candidate:" {print p, i[p], $2}'
}

# apt-get arguments for installing the given packages: each QEMU package that is asked for or
# already installed is pinned to qemu-system-x86's candidate version (KILN_TEST_DEPS_NO_PIN=1
# leaves them unpinned: the install-path test shows that apt then refuses).
install_args() {
  local pkgs=("$@") p inst cand qv="" family=0
  for p in "${pkgs[@]}"; do [[ " ${QEMU_FAMILY[*]} " == *" $p "* ]] && family=1; done
  if ((family)) && [ -z "${KILN_TEST_DEPS_NO_PIN:-}" ]; then
    local -A installed=()
    while read -r p inst cand; do
      installed[$p]=$inst
      [ "$p" = qemu-system-x86 ] && qv=$cand
    done < <(qemu_policy)
    if [ -z "$qv" ] || [ "$qv" = "(none)" ]; then
      echo "test-deps: apt knows no qemu-system-x86 (run apt-get update, or add Debian's main component)" >&2
      return 1
    fi
    for p in "${QEMU_FAMILY[@]}"; do
      inst=${installed[$p]:-"(none)"}
      if [[ " ${pkgs[*]} " == *" $p "* ]] || [ "$inst" != "(none)" ]; then
        local kept=() q
        for q in "${pkgs[@]}"; do [ "$q" = "$p" ] || kept+=("$q"); done
        pkgs=("${kept[@]}" "$p=$qv")
      fi
    done
  fi
  printf '%s\n' "${pkgs[@]}" | sed '/^$/d' | sort -u
}

apt_lists_present() { [ -n "$(find /var/lib/apt/lists -name '*Packages*' -print -quit 2>/dev/null)" ]; }

sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Simulates installing every tool package; prints one line naming the conflict on failure.
check() {
  apt_lists_present || sudo_cmd apt-get update -qq
  local args out
  mapfile -t args < <(install_args $(all_packages))
  if ! out=$(apt-get "${APT_OPTS[@]}" install -s -y --no-install-recommends --allow-downgrades "${args[@]}" 2>&1) \
     || grep -qE '^E:|Broken ' <<<"$out"; then
    local why
    why=$(grep -E '^ [^ ].*: (Breaks|Depends|Conflicts|PreDepends)|^E:' <<<"$out" | head -n 3 | sed 's/^ *//' | paste -sd ';' -)
    echo "scripts/test: apt cannot install the test tools (simulated: apt-get install -s ${args[*]}): ${why:-see apt-get output}" >&2
    return 1
  fi
}

install() {
  local missing args
  mapfile -t missing < <(missing_packages)
  local present
  present=$(comm -23 <(present_packages) <(printf '%s\n' "${missing[@]}" | sort -u) | paste -sd ' ' -)
  echo "test-deps: already present: ${present:-nothing}" >&2
  if ((${#missing[@]} == 0)) || [ -z "${missing[0]}" ]; then
    echo "test-deps: installed: nothing (every tool was present)" >&2
    return 0
  fi
  sudo_cmd apt-get update -qq
  mapfile -t args < <(install_args "${missing[@]}")
  echo "test-deps: installing ${args[*]}" >&2
  DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}" >/dev/null
  echo "test-deps: installed: ${args[*]}" >&2
}

case "${1:-}" in
  check) check ;;
  install)
    [ -z "${KILN_APT_STATUS:-}" ] || { echo "test-deps: install with KILN_APT_STATUS set would install for another machine; refused" >&2; exit 2; }
    install ;;
  plan) install_args $(missing_packages) ;;
  *) echo "usage: $0 check|install|plan" >&2; exit 2 ;;
esac
