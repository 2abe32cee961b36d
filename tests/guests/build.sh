#!/usr/bin/env bash
# Builds the test guests (small components used by the pipeline module's
# unit tests) into target/guests/wasm32-wasip2/release/guest_NAME.wasm.
# Usage: tests/guests/build.sh [NAME...]   (default: all)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
guests=("$@")
if [ ${#guests[@]} -eq 0 ]; then
    guests=(echo spin oom panic wrong-world)
fi
for g in "${guests[@]}"; do
    echo "building guest $g" >&2
    cargo build --quiet --target wasm32-wasip2 --release \
        --manifest-path "tests/guests/$g/Cargo.toml" --target-dir target/guests
done
ls -1 target/guests/wasm32-wasip2/release/*.wasm >&2
