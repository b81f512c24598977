#!/usr/bin/env bash
# Builds kafig.wasm: QuickJS (Debian's quickjs source package, patched) and
# the kafig shim, compiled for wasm32-wasi as a reactor, pre-initialized
# with Wizer, optimized with wasm-opt, its data segments merged by
# cmd/wasmguard. The output is reproducible: the
# same inputs give the same bytes from any directory.
#
#   ./build.sh            build into this folder (kafig.wasm, kafig.wasm.sha256)
#   ./build.sh OUT_DIR    build into OUT_DIR instead (used by `make guest-check`)
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD

# ---- pins ----
QJS_VERSION=2025.04.26
QJS_CONFIG_VERSION=2025-04-26
STACK_SIZE=1048576 # must equal abi.GuestStackSize (checked by the guest tests)
CLANG=clang-19
WASM_LD=wasm-ld-19

OUT=${1:-$HERE}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

./toolchain.sh

# ---- QuickJS source, verified (fetch-quickjs.sh pins the version and hash) ----
QJS_TARBALL=$(./fetch-quickjs.sh)

# ---- Wizer, pinned by package-lock.json ----
if [ ! -x node_modules/@bytecodealliance/wizer-linux-x64/wizer ]; then
  npm ci --no-audit --no-fund --silent
fi
WIZER=$HERE/node_modules/@bytecodealliance/wizer-linux-x64/wizer

# ---- scratch directory, removed on exit ----
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar -C "$WORK" -xf "$QJS_TARBALL"
QJS=$WORK/quickjs-$QJS_VERSION
for p in patches/*.patch; do
  patch -d "$QJS" -p1 --quiet --no-backup-if-mismatch < "$p"
done
cp src/*.c src/*.h "$WORK/"

# A private sysroot: without it clang also searches /usr/include and picks
# up glibc headers.
SYSROOT=$WORK/sysroot
mkdir -p "$SYSROOT/include" "$SYSROOT/lib"
ln -s /usr/include/wasm32-wasi "$SYSROOT/include/wasm32-wasi"
ln -s /usr/lib/wasm32-wasi "$SYSROOT/lib/wasm32-wasi"

CFLAGS=(--target=wasm32-wasi "--sysroot=$SYSROOT" -O2 -fwrapv -D_GNU_SOURCE
  "-DCONFIG_VERSION=\"$QJS_CONFIG_VERSION\"" -DCONFIG_KAFIG
  -ffile-prefix-map="$WORK"=/kafig -ffile-prefix-map="$HERE"=/kafig
  -Wno-unused-parameter -Wno-sign-compare -Wno-implicit-fallthrough)

objs=()
for f in quickjs libregexp libunicode cutils dtoa; do
  $CLANG "${CFLAGS[@]}" -c "$QJS/$f.c" -o "$WORK/$f.o" &
  objs+=("$WORK/$f.o")
done
$CLANG "${CFLAGS[@]}" -Wall -Wextra -Werror -Wno-unused-parameter -Wno-cast-function-type-mismatch -I"$QJS" -c "$WORK/main.c" -o "$WORK/main.o" &
objs+=("$WORK/main.o")
wait

# Link as a WASI reactor, stack first (an overflow traps instead of
# overwriting the heap). No -O at link time: clang would run whatever
# wasm-opt is on PATH.
$CLANG --target=wasm32-wasi "--sysroot=$SYSROOT" -mexec-model=reactor \
  -fuse-ld=lld -Wl,--stack-first -Wl,-z,stack-size=$STACK_SIZE \
  -Wl,--strip-debug -Wl,--wrap=__wasi_clock_time_get -Wl,--export=kafig_stop_word \
  "${objs[@]}" -o "$WORK/raw.wasm"

"$WIZER" --allow-wasi --wasm-bulk-memory true "$WORK/raw.wasm" -o "$WORK/wizer.wasm"
wasm-opt -O2 -g --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int "$WORK/wizer.wasm" -o "$WORK/opt.wasm"

# wasm-opt keeps the function names (-g; the code is the same without):
# the backends' stop guards skip the interpreter by name (abi.GuardSkip).
# Last, cmd/wasmguard keeps those names only and merges Wizer's ~2,200 data
# segments into a few. It adds no guard: each backend adds the one its
# engine needs when it compiles the guest (guest/wasmguard). Standard
# library Go, in this module, importing nothing else of the repository:
# GOWORK=off builds it the same way in the workspace and in a copy of
# guest/ alone (make guest-check).
(cd "$HERE" && GOWORK=off go run ./cmd/wasmguard -stop-global= -func-names-only "$WORK/opt.wasm" "$WORK/kafig.wasm")

cp "$WORK/kafig.wasm" "$OUT/kafig.wasm"
(cd "$OUT" && sha256sum kafig.wasm > kafig.wasm.sha256)
echo "build.sh: $(stat -c %s "$OUT/kafig.wasm") bytes, sha256 $(cut -d' ' -f1 < "$OUT/kafig.wasm.sha256")"
