#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets up .venv first (cheap when already done).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests never reach the network: no hub, no telemetry.
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
# Lint and type-check first (configured in pyproject.toml): seconds, and a finding stops the run.
# CLIP_LINT=0 skips them (running one test file while editing).
if [ "${CLIP_LINT:-1}" != 0 ]; then
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
