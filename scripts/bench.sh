#!/usr/bin/env bash
# scripts/bench.sh: the benchmarks of `make bench` (see bench/README.md).
#
#   scripts/bench.sh            build what is needed, start the database, run
#                               bench-plugins (issue 3), bench-ingest (issue 4),
#                               bench-clip (issue 5), bench-library (issue 12) and
#                               bench-queries (issue 15 §4),
#                               then print one summary table
#   BENCH_QUICK=1 scripts/bench.sh   fewer rounds (same measures)
#   BENCH_ONLY=plugins|ingest|clip|library|queries   run one of the binaries
#   BENCH_ONLY=import                   issue 15 §2 only (bench-import)
#
# Every measure is printed beside a peer measured in the same run, with the ratio
# and the target. A missed target prints MISSED, and one whose peer misbehaved in
# the run (e.g. an erratic dd) prints UNSURE; the script still exits 0, since
# speed on a shared machine is a figure to read, not a gate. It exits non-zero
# only when a benchmark could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
CARGO=${CARGO:-cargo}
ONLY=${BENCH_ONLY:-all}
log() { printf 'bench.sh: %s\n' "$*" >&2; }

# bench-clip needs none of the peer tools (its peer is the one-worker setup),
# bench-queries neither (its peers are budgets and the exact scan).
# The peers come from Debian: installed here when root, else the command to run is printed.
[ "$ONLY" = clip ] || [ "$ONLY" = library ] || [ "$ONLY" = queries ] || scripts/apt-need.sh vipsthumbnail:libvips-tools \
  exiftool:libimage-exiftool-perl heif-convert:libheif-examples dd:coreutils
# bench-library measures the web app in Debian's Chromium.
if [ "$ONLY" = all ] || [ "$ONLY" = library ]; then
  scripts/apt-need.sh chromium:chromium chromedriver:chromium-driver
fi

started=$(date +%s)
log "building host, inference server, plugins, the echo test guest and the benchmarks (release)"
$CARGO build --release -p lumilio -p lumilio-infer
plugins=()
# Components only (crates with a cdylib): plugins/sdk is a library.
for manifest in $(grep -l '^crate-type *=.*"cdylib"' plugins/*/Cargo.toml); do
  plugins+=(-p "$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n1)")
done
$CARGO build --release --target wasm32-wasip2 "${plugins[@]}"
bash tests/guests/build.sh echo
$CARGO build --release -p lumilio-bench

if [ "$ONLY" != plugins ] && [ "$ONLY" != clip ] && [ -z "${DATABASE_URL:-}" ]; then
  db_line=$(scripts/db.sh)
  eval "$db_line"
  export DATABASE_URL
fi

summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
export BENCH_SUMMARY=$summary

status=0
if [ "$ONLY" = all ] || [ "$ONLY" = plugins ]; then
  target/release/bench-plugins || { status=$?; log "bench-plugins could not finish (exit $status)"; }
fi
if [ "$ONLY" = all ] || [ "$ONLY" = ingest ]; then
  target/release/bench-ingest || { status=$?; log "bench-ingest could not finish (exit $status)"; }
fi
if [ "$ONLY" = all ] || [ "$ONLY" = clip ]; then
  target/release/bench-clip || { status=$?; log "bench-clip could not finish (exit $status)"; }
fi
if [ "$ONLY" = all ] || [ "$ONLY" = library ]; then
  target/release/bench-library || { status=$?; log "bench-library could not finish (exit $status)"; }
fi
# bench-import (issue 15 §2) drives the Immich CLI (npm, into .local/ on first use).
if [ "$ONLY" = all ] || [ "$ONLY" = import ]; then
  target/release/bench-import || { status=$?; log "bench-import could not finish (exit $status)"; }
fi
if [ "$ONLY" = all ] || [ "$ONLY" = queries ]; then
  target/release/bench-queries || { status=$?; log "bench-queries could not finish (exit $status)"; }
fi

echo
echo "== summary ($(nproc) cores, ${BENCH_QUICK:+quick mode, }$(( $(date +%s) - started )) s incl. build) =="
awk -F'\t' '
  BEGIN { h[1]="measure"; h[2]="ours"; h[3]="peer"; h[4]="ratio"; h[5]="target"; h[6]="ok/MISSED"
          for (i = 1; i <= 6; i++) w[i] = length(h[i]) }
  { n++; for (i = 1; i <= 6; i++) { c[n, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
  function row(get,   i, s) { s = ""; for (i = 1; i <= 6; i++) s = s sprintf(i == 1 ? "%-*s" : " | %-*s", w[i], get[i]); sub(/ +$/, "", s); print s }
  END {
    for (i = 1; i <= 6; i++) { t[i] = h[i]; d[i] = sprintf("%*s", w[i], ""); gsub(/ /, "-", d[i]) }
    row(t); row(d)
    for (r = 1; r <= n; r++) { for (i = 1; i <= 6; i++) t[i] = c[r, i]; row(t) }
  }' "$summary"
if grep -q $'\tMISSED$' "$summary"; then
  echo "some targets were MISSED (see above); exit status stays 0"
fi
if grep -q $'\tUNSURE$' "$summary"; then
  echo "some verdicts are UNSURE: their peer misbehaved in this run (see the row); run them again"
fi
exit "$status"
