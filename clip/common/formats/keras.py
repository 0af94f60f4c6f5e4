"""This library's TF model saved as a `.keras` file (Keras 3: a zip of config.json and model.weights.h5).

Unlike the other formats this one is not a layout of tensors but a whole clip.tf model, so reading
and writing build one: keras and clip.tf are imported when called (and only then), the names and
layouts are the TF backend's own (clip.tf.loading.canonical_state / assign_canonical).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

from clip.common import weight_files

SUFFIX = ".keras"  # Keras refuses to save under any other name


def read(path: str | os.PathLike) -> tuple[dict, dict, str]:
    """({canonical name: array}, config dict with "architectures", canonical model class) of a .keras
    file of a clip.tf model; anything else is an OSError or ValueError naming the file."""
    import keras

    import clip.tf  # noqa: F401  registers the model classes with Keras
    from clip.tf import loading

    weight_files.check_keras_archive(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a file that is not its own
        raise ValueError(f"{path}: not a .keras file of a clip.tf model ({type(err).__name__}: {err})") from None
    if not hasattr(model, "canonical_variables"):
        raise ValueError(f"{path}: the .keras file holds a {type(model).__name__}, not a clip.tf CLIP model")
    config = {**model.config.to_dict(), "architectures": [model.canonical_class]}
    return loading.canonical_state(model), config, model.canonical_class


def write(arrays: dict, config: CLIPConfig | CLIPTextConfig | CLIPVisionConfig, model_class: str, path: str) -> None:
    """A clip.tf model of `model_class` built from `config` (a config object) with `arrays`, saved at `path`."""
    import clip.tf
    from clip.tf import loading

    cls = getattr(clip.tf, "TF" + model_class, None)
    if cls is None:
        raise ValueError(f"clip.tf has no TF{model_class}")
    model = cls(config)
    loading.assign_canonical(model, arrays)
    keras_path = path if path.endswith(SUFFIX) else path + SUFFIX
    model.save(keras_path)
    if keras_path != path:
        os.replace(keras_path, path)
