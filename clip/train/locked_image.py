"""The locked image tower (LiT, `clip train --lock-image`): which image-tower parameters stay fixed.

The image tower is cut into groups as open_clip's ViT lock cuts it: the embeddings (with
pre_layrnorm), each encoder layer, then the head (post_layernorm and visual_projection).
--lock-image-unlocked-groups N trains the last N groups; in the locked ones the LayerNorm gains and
biases train too unless --lock-image-freeze-norm. Whether a parameter is a LayerNorm's is read from
its row in the parameter table (clip.common.params), never from its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from clip.common.params import Param, parameter_table
from clip.train.options import LockSettings

# The parameter-table kinds of a LayerNorm's gain and bias: they keep training in a locked group
# unless freeze_norm.
LAYER_NORM_KINDS = ("layer_norm_weight", "layer_norm_bias")


def image_tower_groups(num_layers: int) -> int:
    """How many groups --lock-image-unlocked-groups counts over: the embeddings (with pre_layrnorm), each
    encoder layer, then the head (post_layernorm and visual_projection), as open_clip's ViT lock."""
    return num_layers + 2


def image_group(name: str, num_layers: int) -> int | None:
    """The lock group of canonical parameter `name` (0 = embeddings ... num_layers + 1 = head), or None
    for a parameter outside the image tower."""
    if name.startswith("visual_projection.") or name.startswith("vision_model.post_layernorm."):
        return num_layers + 1
    if name.startswith("vision_model.encoder.layers."):
        return 1 + int(name.split(".")[3])
    if name.startswith("vision_model."):
        return 0
    return None


@lru_cache(maxsize=8)
def stock_table(num_layers: int) -> dict[str, Param]:
    """The parameter table of a default-width CLIPModel with `num_layers` image layers: a parameter's kind
    depends on where it sits in the architecture, not on the widths, so it stands in for a model's own
    table when the caller has none at hand."""
    from clip.common.config import CLIPConfig

    return parameter_table(CLIPConfig(vision_config={"num_hidden_layers": num_layers}), "CLIPModel")


def is_frozen(name: str, lock: LockSettings | None, num_layers: int, table: Mapping[str, Param] | None = None) -> bool:
    """Whether canonical parameter `name` stays fixed under `lock` ({"unlocked_groups": N, "freeze_norm": bool}
    from --lock-image, None when the image tower trains). The last N groups train; in the locked ones the
    LayerNorm gains and biases train too unless freeze_norm (then the locked part is bit-for-bit fixed).

    table: the model's parameter table (clip.common.params.parameter_table), whose row kinds say which
    parameters are LayerNorms'; by default that of a stock CLIPModel with `num_layers` image layers.
    """
    group = image_group(name, num_layers)
    if lock is None or group is None or group >= image_tower_groups(num_layers) - lock["unlocked_groups"]:
        return False
    rows = stock_table(num_layers) if table is None else table
    return lock["freeze_norm"] or rows[name].kind not in LAYER_NORM_KINDS
