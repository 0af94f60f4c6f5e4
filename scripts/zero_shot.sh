#!/usr/bin/env bash
# Zero-shot classification of a sample photo: sets up .venv first, then runs `clip zero-shot`.
# Arguments are passed through (e.g. --labels "a cat,a dog" --model DIR_OR_HUB_ID IMAGE...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- tests/data/images/chelsea.png --labels "a photo of a cat,a photo of a dog,a photo of a rocket,a cup of coffee"
fi
exec .venv/bin/python -m clip zero-shot "$@"
