#!/bin/sh
# Regenerates the test modules from their text form (needs wabt's wat2wasm).
set -e
cd "$(dirname "$0")"
for f in *.wat; do
	wat2wasm "$f" -o "${f%.wat}.wasm"
done
