#!/usr/bin/env bash
# Builds a pipeline stage written in Python (plugins-py/STAGE) into a WebAssembly
# component with componentize-py, and prints the component's path.
#
#   scripts/componentize-py.sh [STAGE]     STAGE defaults to tagger
#   -> target/py-stages/STAGE.wasm
#
# componentize-py (pinned below) comes from PyPI, installed into
# .local/componentize-py (git-ignored), as scripts/node.sh installs Node. Before
# building, the stage's own unit tests (plugins-py/STAGE/test_*.py) run on the
# machine's python3. Idempotent: when the stage's sources, the WIT world and the
# tool version are what the last build saw, it only prints the path, so the same
# bytes keep hitting the host's compile cache. Safe to run concurrently (flock).
set -euo pipefail

VERSION=${LUMILIO_COMPONENTIZE_PY_VERSION:-0.25.1}
stage=${1:-tagger}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/plugins-py/$stage"
tool="$root/.local/componentize-py"
out_dir="$root/target/py-stages"
out="$out_dir/$stage.wasm"

[[ -f $src/app.py ]] || { echo "componentize-py.sh: no Python stage at $src (expected $src/app.py)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "componentize-py.sh: python3 is needed (Debian: apt-get install python3 python3-pip)" >&2; exit 1; }
mkdir -p "$out_dir"
exec 9>"$out_dir/.$stage.lock"
flock 9

# What the component is made from: the stage's Python files, the WIT package, the tool.
inputs=$( (cd "$root" && find "plugins-py/$stage" wit -type f \( -name '*.py' -o -name '*.wit' \) \
    -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; echo "componentize-py $VERSION") | sha256sum | cut -c1-64)
if [[ -f $out && "$(cat "$out.inputs" 2>/dev/null)" == "$inputs" ]]; then
    echo "$out"
    exit 0
fi

if [[ ! -f $tool/.installed-$VERSION ]]; then
    echo "componentize-py.sh: installing componentize-py==$VERSION from PyPI into $tool" >&2
    rm -rf "$tool"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --root-user-action=ignore --target "$tool" "componentize-py==$VERSION" >&2 ||
        { echo "componentize-py.sh: pip could not install componentize-py==$VERSION (it needs PyPI)" >&2; exit 1; }
    touch "$tool/.installed-$VERSION"
fi

echo "componentize-py.sh: unit tests of plugins-py/$stage" >&2
(cd "$src" && PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -q -p 'test_*.py' >&2) ||
    { echo "componentize-py.sh: the unit tests of plugins-py/$stage failed; not building it" >&2; exit 1; }

echo "componentize-py.sh: building $out (about 30 s)" >&2
# Write beside the target and rename, so a reader never sees half a component.
PYTHONPATH="$tool" PYTHONDONTWRITEBYTECODE=1 python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' \
    --quiet -d "$root/wit/pipeline.wit" -w stage componentize -p "$src" app -o "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "$inputs" >"$out.inputs"
echo "$out"
