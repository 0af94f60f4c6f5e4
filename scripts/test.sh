#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: sets up .venv first (cheap when already done).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests never reach the network: no hub, no telemetry.
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
