#!/usr/bin/env bash
# Regenerates tests/data/photos/exiftool-refs.json: what `exiftool -j -n` reads
# from every sample photo, for the fields the metadata plugin's agreement test
# compares (plugins/metadata/tests/exiftool.rs). The test reads this file, so
# `make test` needs no exiftool; run this (`make exiftool-refs`) after adding
# or changing a sample photo, and commit the result.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
photos="$root/tests/data/photos"
out="$photos/exiftool-refs.json"

"$root/scripts/apt-need.sh" exiftool:libimage-exiftool-perl

# The tags the test's `theirs()` reads; every other tag is left out so the file stays small.
tags=(DateTimeOriginal OffsetTimeOriginal CreateDate OffsetTimeDigitized ModifyDate OffsetTime
      Make Model LensModel ImageDescription ExposureTime FNumber FocalLength
      GPSLatitude GPSLongitude GPSAltitude ISO Orientation ExifImageWidth ExifImageHeight)
args=()
for t in "${tags[@]}"; do args+=("-$t"); done

cd "$photos"
# exiftool exits 1 when some file has none of the tags; its JSON still lists every file.
json=$(exiftool -j -n -r -q -q --ext md --ext json "${args[@]}" . || true)
version=$(exiftool -ver)
script=$(cat <<'PY'
import json, sys
version, out = sys.argv[1], sys.argv[2]
rows = json.load(sys.stdin)
refs = {}
for r in rows:
    rel = r.pop("SourceFile").removeprefix("./")
    refs[rel] = r
doc = {"generator": f"exiftool {version} -j -n (scripts/exiftool-refs.sh)", "files": dict(sorted(refs.items()))}
with open(out, "w") as f:
    json.dump(doc, f, indent=1, ensure_ascii=False, sort_keys=False)
    f.write("\n")
print(f"exiftool-refs.sh: {len(refs)} files -> {out}", file=sys.stderr)
PY
)
printf '%s' "$json" | python3 -c "$script" "$version" "$out"
