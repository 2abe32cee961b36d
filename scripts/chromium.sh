#!/usr/bin/env bash
# Debian's Chromium and its WebDriver, for the browser tests (tests/e2e/web.rs).
# Installs them with apt-get when run as root and they are missing; otherwise
# prints the command to run and exits 1. Browser downloads from elsewhere
# (npm's puppeteer/playwright browsers) do not work on a closed network.
set -euo pipefail
need=()
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
cmd="apt-get update && apt-get install -y ${need[*]}"
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "chromium.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  exit 0
fi
echo "chromium.sh: the browser tests need ${need[*]}; as root run: $cmd" >&2
exit 1
