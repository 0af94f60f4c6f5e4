"""Importing TensorFlow without its C++ start-up chatter on stderr, and without changing the user's
environment (importing clip never does)."""

from __future__ import annotations

import os
import sys
from types import ModuleType

# TensorFlow's C++ log level, read once when TensorFlow starts
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def import_tensorflow_quietly() -> ModuleType:
    """`import tensorflow` with its C++ start-up chatter (CPU feature notes) kept off stderr, leaving the
    user's environment as it was: TF_CPP_MIN_LOG_LEVEL is set only while TensorFlow is first imported,
    only when the user has not set it, and removed again afterwards (jax, which TensorFlow may import,
    sets it too). Later TensorFlow messages keep the level read at start-up."""
    if "tensorflow" in sys.modules or TF_LOG_LEVEL_ENV in os.environ:
        import tensorflow

        return tensorflow
    os.environ[TF_LOG_LEVEL_ENV] = "2"
    try:
        import tensorflow
    finally:
        os.environ.pop(TF_LOG_LEVEL_ENV, None)
    return tensorflow
