"""The TensorFlow backend of `clip train` (clip.train.tf_trainer, over clip.train.tf_step).

Importing this module imports nothing and changes nothing: TensorFlow starts on the first use of
one of its names (`clip.train.tf.Trainer`, `build_optimizer`, `make_train_step`, ...), through
`start_tensorflow`, which first quiets TensorFlow's start-up chatter unless the user chose a level.
"""

from __future__ import annotations

import os

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def start_tensorflow() -> None:
    """Import TensorFlow for training, with TF_CPP_MIN_LOG_LEVEL=1 (no info lines) unless it is set already."""
    os.environ.setdefault(LOG_LEVEL_ENV, "1")
    import tensorflow  # noqa: F401


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    start_tensorflow()
    from clip.train import tf_trainer

    try:
        return getattr(tf_trainer, name)
    except AttributeError:
        raise AttributeError(f"module 'clip.train.tf' has no attribute {name!r}") from None
