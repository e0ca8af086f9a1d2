# Shared by scripts/bench-*: tool installation, the kiln binary, timing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"

need_tools() { # need_tools tool:package ...
  local missing=()
  for tp in "$@"; do
    command -v "${tp%%:*}" >/dev/null 2>&1 || missing+=("${tp##*:}")
  done
  if ((${#missing[@]})); then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The kiln binary, built in the same profile as the tests (one profile: compiled once).
kiln_bin() {
  (cd "$ROOT" && cargo build --locked -q) >&2
  echo "$ROOT/target/debug/kiln"
}

# timed NAME CMD...: runs CMD, records wall seconds in T_NAME, peak RSS (KiB) in RSS_NAME and
# CPU seconds (user + system, which other load on the machine moves less than wall time) in
# CPU_NAME.
timed() {
  local name=$1; shift
  local tf; tf=$(mktemp)
  /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" >/dev/null
  read -r secs rss user sys <"$tf"; rm -f "$tf"
  printf -v "T_$name" '%s' "$secs"
  printf -v "RSS_$name" '%s' "$rss"
  printf -v "CPU_$name" '%s' "$(python3 -c "print(round($user + $sys, 2))")"
}

ratio() { python3 -c "import sys; a,b=map(float,sys.argv[1:]); print(f'{a/b:.2f}' if b else 'inf')" "$1" "$2"; }

work_dir() {
  local d="${KILN_BENCH_DIR:-$ROOT/target/bench}"
  mkdir -p "$d"
  echo "$d"
}

# The benchmark tree, generated once per work dir.
bench_tree() {
  local w=$1
  if [ ! -f "$w/tree.done" ]; then
    rm -rf "$w/tree"
    python3 "$ROOT/scripts/lib/gen-tree.py" "$w/tree" >/dev/null
    touch "$w/tree.done"
  fi
  echo "$w/tree"
}
