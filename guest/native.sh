#!/usr/bin/env bash
# Builds the native baseline: the same pinned QuickJS source, with the same
# patches (their kafig parts are off without CONFIG_KAFIG), compiled by the
# host's gcc -O2 with upstream's Makefile. Output in OUT_DIR (default
# guest/build/native): qjs (the interpreter with quickjs-libc, used to run
# QuickJS's own tests natively) and libquickjs.a + headers (for embedding).
#
#   ./native.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-$PWD/build/native}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
fresh=1
for f in native.sh patches/*.patch; do
  [ -f "$OUT/.stamp" ] && [ "$OUT/.stamp" -nt "$f" ] || fresh=0
done
if [ -x "$OUT/qjs" ] && [ -f "$OUT/libquickjs.a" ] && [ "$fresh" = 1 ]; then
  exit 0
fi
TARBALL=$(./fetch-quickjs.sh)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar -C "$WORK" -xf "$TARBALL"
SRC=$WORK/quickjs-2025.04.26
for p in patches/*.patch; do
  patch -d "$SRC" -p1 --quiet --no-backup-if-mismatch < "$p"
done
make -s -C "$SRC" -j"$(nproc)" CONFIG_LTO= qjs libquickjs.a >/dev/null
cp "$SRC/qjs" "$SRC/libquickjs.a" "$SRC/quickjs.h" "$SRC/quickjs-libc.h" "$OUT/"
rm -rf "$OUT/tests" && cp -r "$SRC/tests" "$OUT/tests"
touch "$OUT/.stamp"
echo "native.sh: $OUT/qjs"
