#!/usr/bin/env bash
# Makes sure Debian packages are installed, for the few tools that only Debian
# carries (benchmark peers, the browser for the web tests).
#
#   scripts/apt-need.sh COMMAND:PACKAGE...   e.g. vipsthumbnail:libvips-tools
#
# A pair is satisfied when COMMAND is on PATH. The missing packages are
# installed with apt-get when this runs as root; otherwise it prints the exact
# command to run and exits 1. Nothing is printed on stdout.
set -euo pipefail
missing=()
for pair in "$@"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
if ((EUID != 0)); then
    echo "apt-need.sh: missing ${missing[*]}; run:  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
command -v apt-get >/dev/null || { echo "apt-need.sh: no apt-get here; install ${missing[*]} by hand" >&2; exit 1; }
echo "apt-need.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists may be empty or stale: update once, then retry.
apt-get install -y -q "${missing[@]}" >&2 2>/dev/null ||
    { apt-get update -q >&2 && apt-get install -y -q "${missing[@]}" >&2; }
