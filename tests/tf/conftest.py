"""Tests of clip.tf never reach the network and stay on the 2 CPU threads they share.

TF_ENABLE_ONEDNN_OPTS is left as TensorFlow sets it (oneDNN on): the 1e-5 comparisons hold with it.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
