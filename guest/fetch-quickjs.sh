#!/usr/bin/env bash
# Fetches the pinned QuickJS source (Debian's trixie source package) into
# guest/third_party, verifies its sha256, and prints the tarball's path.
# Shared by build.sh (the guest) and native.sh (the native baseline).
set -euo pipefail
cd "$(dirname "$0")"

QJS_VERSION=2025.04.26
QJS_ORIG=quickjs_${QJS_VERSION}.orig.tar.xz
QJS_SHA256=ec81da5b3249ed648dbc7df4a1654988910e66a118d9b71cb63534216efcfbbe

mkdir -p third_party
if [ ! -f "third_party/$QJS_ORIG" ]; then
  ./toolchain.sh >&2
  (cd third_party && apt-get source --download-only "quickjs=${QJS_VERSION}-1" >/dev/null 2>&1)
fi
if ! echo "$QJS_SHA256  third_party/$QJS_ORIG" | sha256sum -c --quiet - >&2; then
  echo "fetch-quickjs.sh: $QJS_ORIG does not match the pinned sha256; refusing it" >&2
  rm -f "third_party/$QJS_ORIG"
  exit 1
fi
echo "$PWD/third_party/$QJS_ORIG"
