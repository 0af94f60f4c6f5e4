#!/usr/bin/env bash
# Creates .venv and installs the package with the extras named in $CLIP_EXTRAS (default: all,test),
# pinned by constraints.txt. Re-running is cheap: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${CLIP_EXTRAS:-all,test}"
stamp=".venv/.clip-setup-stamp"
# The search page's browser test drives Debian's headless Chromium (the test suite needs it; users do not).
if [ "${extras#*test}" != "$extras" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
    || echo "setup: could not install chromium; the browser test will say so" >&2
fi
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
