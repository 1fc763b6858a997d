#!/usr/bin/env bash
# Set up an arm64 user-mode emulation environment for the runtime (correctness, not timing):
#   - a bare arm64 Debian rootfs with Python 3.11 (mmdebstrap --variant=extract: no chroot, no root needed
#     beyond installing mmdebstrap itself),
#   - QEMU >= 8 user-mode emulator: the static qemu-aarch64 from Debian trixie's qemu-user (bookworm's
#     QEMU 7.2 crashes importing onnxruntime >= 1.28),
#   - aarch64 wheels of the runtime's dependencies, same versions as the host venv.
# Usage: benchmarks/arm64/setup.sh [DIR] [PYTHON]   (default DIR ~/.cache/genre-edge/arm64)
#        benchmarks/arm64/setup.sh --mirror        (print the Debian archive it would use, then stop)
# The Debian archive is DEBIAN_MIRROR, else the first non-security one in this machine's apt sources.
set -euo pipefail
DIR=${1:-${GENRE_ARM64_DIR:-$HOME/.cache/genre-edge/arm64}}
PY=${2:-python3}
# The Debian archive: DEBIAN_MIRROR, else the one this machine's own apt reads (no host written in here).
mirror_from_apt() {
  local f u
  local apt=${GENRE_APT_DIR:-/etc/apt}  # (other paths: for the tests)
  grep -qs '^ID=debian' "${GENRE_OS_RELEASE:-/etc/os-release}" || return 0  # another distribution's mirror holds no Debian suites
  for f in "$apt"/sources.list.d/*.sources; do  # deb822 files first (Debian 12's default)
    [ -f "$f" ] || continue
    u=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
    [ -n "$u" ] && { echo "$u"; return 0; }
  done
  for f in "$apt"/sources.list "$apt"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    u=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $i !~ /security/) {print $i; exit}}' "$f")
    [ -n "$u" ] && { echo "$u"; return 0; }
  done
}
MIRROR=${DEBIAN_MIRROR:-$(mirror_from_apt)}
if [ -z "$MIRROR" ]; then
  echo "error: no Debian archive found in this machine's apt sources (/etc/apt); set DEBIAN_MIRROR, e.g." \
       "DEBIAN_MIRROR=http://<your mirror>/debian $0" >&2
  exit 2
fi
echo "Debian archive: $MIRROR"
[ "${1:-}" = "--mirror" ] && exit 0  # only say which archive would be used
mkdir -p "$DIR"
if ! command -v mmdebstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null
  else
    echo "error: mmdebstrap is missing; install it (Debian/Ubuntu: sudo apt-get install mmdebstrap)" >&2; exit 2
  fi
fi
if [ ! -f "$DIR/root/.done" ]; then
  rm -rf "$DIR/root"
  mmdebstrap --quiet --variant=extract --architectures=arm64 --include=python3.11,libstdc++6,libgomp1 \
    bookworm "$DIR/root" "$MIRROR"
  touch "$DIR/root/.done"
fi
if [ ! -f "$DIR/qemu/.done" ] || [ ! -f "$DIR/qemu/usr/bin/qemu-x86_64" ]; then
  rm -rf "$DIR/qemu" "$DIR/qemu.tmp"
  mmdebstrap --quiet --variant=extract --architectures=amd64 --include=qemu-user trixie "$DIR/qemu.tmp" "$MIRROR"
  # the binaries are static: keep them alone (the extract also brought ~450 MB of dependencies).
  # qemu-x86_64 runs this machine's own Python on an emulated AVX2-only core (-cpu Haswell)
  mkdir -p "$DIR/qemu/usr/bin"
  mv "$DIR/qemu.tmp/usr/bin/qemu-aarch64" "$DIR/qemu.tmp/usr/bin/qemu-x86_64" "$DIR/qemu/usr/bin/"
  rm -rf "$DIR/qemu.tmp"
  touch "$DIR/qemu/.done"
fi
QEMU="$DIR/qemu/usr/bin/qemu-aarch64"
"$QEMU" --version | head -1
# the runtime's dependencies at the host venv's versions, as aarch64 wheels
REQS=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("numpy", "onnxruntime", "tokenizers", "click")))
PYEOF
)
if [ ! -f "$DIR/site/.done" ] || [ "$(cat "$DIR/site/.done")" != "$REQS" ]; then
  rm -rf "$DIR/site"
  "$PY" -m pip install -q --target "$DIR/site" --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --only-binary=:all: \
    --python-version 3.11 --implementation cp --no-deps $REQS
  echo "$REQS" > "$DIR/site/.done"
fi
echo "arm64 environment ready in $DIR ($(du -sh "$DIR" | cut -f1)): $REQS"
