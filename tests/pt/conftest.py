"""Tests of clip.pt never reach the network and stay on the 2 CPU threads they share."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
