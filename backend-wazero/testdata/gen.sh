#!/bin/sh
# Regenerates the test modules from their text form (needs wabt's wat2wasm).
set -e
cd "$(dirname "$0")"
for f in *.wat; do
	wat2wasm "$f" -o "${f%.wat}.wasm"
done
# The fake guest without its stop guard: the backend falls back on wazero's
# CloseOnContextDone for such a guest.
grep -v ';; guard$' fake.wat > "${TMPDIR:-/tmp}/fake_noguard.wat"
wat2wasm "${TMPDIR:-/tmp}/fake_noguard.wat" -o fake_noguard.wasm
rm -f "${TMPDIR:-/tmp}/fake_noguard.wat"
