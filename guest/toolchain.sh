#!/usr/bin/env bash
# Installs the pinned guest toolchain on Debian 12 (bookworm): clang/lld 19 for
# wasm32-wasi, wasi-libc, binaryen and wabt, and the trixie deb-src entry that
# the QuickJS source package comes from. Safe to run again: it only installs
# what is missing. Needs root (CI and developer machines run as root).
set -euo pipefail

PKGS=(clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc binaryen wabt xz-utils dpkg-dev)
SRC_LIST=/etc/apt/sources.list.d/kafig-trixie-src.sources

need_update=0
if ! grep -rqs 'trixie' /etc/apt/sources.list.d/ /etc/apt/sources.list 2>/dev/null || [ ! -f "$SRC_LIST" ]; then
  cat >"$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then need_update=1; fi
# The deb-src index must be present for apt-get source.
ls /var/lib/apt/lists/*trixie*Sources* >/dev/null 2>&1 || need_update=1

if [ "$need_update" = 1 ]; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
