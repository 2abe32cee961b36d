#!/usr/bin/env bash
# Regenerates the HEIC reference data the thumbnail plugin's correctness test
# (plugins/thumbnail/tests/heic.rs) compares against, so `make test` needs no
# libheif: run this (`make heic-refs`) after adding or changing a HEIC/HEIF
# sample, and commit the result.
#
# For every HEIC/HEIF under tests/data/photos/heic, plus the synthetic files
# this script makes (a 10-bit one and one with irot+imir, both encoded by
# x265 through libheif's heif-enc), it writes to plugins/thumbnail/tests/heic-refs/:
#   NAME.small.png  the reference `small` rendition: decoded by libheif's
#                   heif-convert (irot/imir applied, EXIF orientation not, as
#                   HEIF requires), colour-managed to sRGB by vips/lcms when the
#                   file has an ICC profile (nclx-only files are left as coded,
#                   as the plugin does for BT.709/BT.601 primaries), and resized
#                   to fit 400 px with the plugin's rounding and a Catmull-Rom
#                   kernel (vips `--kernel cubic`).
# The synthetic inputs are written to plugins/thumbnail/tests/heic/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
photos="$root/tests/data/photos/heic"
inputs="$root/plugins/thumbnail/tests/heic"
out="$root/plugins/thumbnail/tests/heic-refs"
small=400

"$root/scripts/apt-need.sh" heif-convert:libheif-examples vips:libvips-tools python3:python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$inputs" "$out"

# --- synthetic inputs, from samplefilehub.heif ----------------------------
src="$photos/samplefilehub.heif"
heif-convert "$src" "$tmp/src.png" >/dev/null
# 10-bit: a 16-bit PNG in, `-b 10` out.
vips colourspace "$tmp/src.png" "$tmp/src16.png" rgb16
heif-enc -q 90 -b 10 "$tmp/src16.png" -o "$inputs/ten-bit.heic" >/dev/null
# irot + imir: heif-enc writes neither, so add them to an 8-bit file.
heif-enc -q 90 "$tmp/src.png" -o "$tmp/plain.heic" >/dev/null
python3 "$root/scripts/heif-add-transform.py" "$tmp/plain.heic" "$inputs/rot90-mirror.heic" 1 0

# --- references ------------------------------------------------------------
shopt -s nullglob nocaseglob
files=("$photos"/*.heic "$photos"/*.heif "$photos"/*/*.heic "$photos"/*/*.heif "$inputs"/*.heic)
shopt -u nocaseglob
rm -f "$out"/*.small.png
for f in "${files[@]}"; do
  name=$(basename "$f")
  heif-convert "$f" "$tmp/full.png" >/dev/null
  # 16-bit output (10-bit files) to 8-bit first, as the plugin decodes to 8.
  vips colourspace "$tmp/full.png" "$tmp/full8.png" srgb
  if vipsheader -f icc-profile-data "$tmp/full8.png" >/dev/null 2>&1; then
    vips icc_transform "$tmp/full8.png" "$tmp/srgb.png" srgb --embedded --intent perceptual
  else
    cp "$tmp/full8.png" "$tmp/srgb.png"
  fi
  w=$(vipsheader -f width "$tmp/srgb.png")
  h=$(vipsheader -f height "$tmp/srgb.png")
  # The plugin's `target()`: fit in small x small, never upscale, round.
  read -r tw th < <(python3 -c "
w,h,n=$w,$h,$small
s=n/max(w,h)
print(*( (w,h) if max(w,h)<=n else (min(max(round(w*s),1),n), min(max(round(h*s),1),n)) ))")
  if [ "$tw" = "$w" ] && [ "$th" = "$h" ]; then
    cp "$tmp/srgb.png" "$tmp/small.png"
  else
    vips resize "$tmp/srgb.png" "$tmp/small.png" "$(python3 -c "print($tw/$w)")" \
      --vscale "$(python3 -c "print($th/$h)")" --kernel cubic
  fi
  # No profile in the reference: its pixels are sRGB.
  vips copy "$tmp/small.png" "$out/$name.small.png[strip]"
  got="$(vipsheader -f width "$out/$name.small.png")x$(vipsheader -f height "$out/$name.small.png")"
  [ "$got" = "${tw}x${th}" ] || { echo "error: $name: resized to $got, wanted ${tw}x${th}" >&2; exit 1; }
  echo "$name: ${w}x${h} -> ${tw}x${th}"
done
echo "wrote ${#files[@]} references to ${out#"$root"/}"
