#!/usr/bin/env bash
# Creates .venv and installs the package with the extras named in $CLIP_EXTRAS (default: all,test),
# pinned by constraints.txt. Re-running is cheap: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${CLIP_EXTRAS:-all,test}"
stamp=".venv/.clip-setup-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and alone, so nothing else can drag in a CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$extras]"
echo "$want" > "$stamp"
