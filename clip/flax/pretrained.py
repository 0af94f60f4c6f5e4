"""transformers' FlaxPreTrainedModel surface, one mixin under FlaxCLIPPreTrainedModel.

Dtype casts of a params tree (to_fp16 / to_bf16 / to_fp32, with a mask), the `_do_init=False`
contract (no params kept: reading model.params or calling without params= raises, as in
transformers), input_shape, params_shape_tree, _from_config. Framework-neutral parts come from
clip.common.surface.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from clip.common import surface

NOT_INITIALIZED = (
    "`params` cannot be accessed from model when the model is created with `_do_init=False`. "
    "You must call `init_weights` manually and store the params outside of the model and pass it explicitly where needed."
)


def cast_floating(params, dtype, mask=None):
    """params with every floating leaf cast to `dtype`; with `mask` (a tree of booleans of the same
    structure) only where the mask is True, as transformers' to_fp16/to_bf16/to_fp32."""

    def cast(leaf, selected=True):
        if selected and jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return jnp.asarray(leaf, dtype=dtype)
        return leaf

    if mask is None:
        return jax.tree.map(cast, params)
    return jax.tree.map(cast, params, _plain(mask))


def _plain(tree):
    """A FrozenDict (or any mapping) as nested plain dicts, so its structure matches a params dict."""
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


class FlaxPreTrainedSurface(surface.ConfigSurface):
    """Mixed into FlaxCLIPPreTrainedModel; subclasses set config_class, module_class, main_input_name."""

    base_model_prefix = ""  # transformers' FlaxCLIP classes leave it empty
    main_input_name = "input_ids"
    framework = "flax"
    _is_initialized = False

    def default_input_shape(self) -> tuple:
        """transformers' input_shape: (1, 1) token ids and/or one NHWC image of the config's size."""
        if "Text" in type(self).__name__:
            return (1, 1)
        vision = getattr(self.config, "vision_config", self.config)
        image = (1, vision.image_size, vision.image_size, vision.num_channels)
        return image if "Vision" in type(self).__name__ else ((1, 1), image)

    # -- params ---------------------------------------------------------------------------------
    def _check_initialized(self, params):
        if params is None and not self._is_initialized:
            raise ValueError(NOT_INITIALIZED)

    @property
    def required_params(self) -> set:
        return {
            tuple(str(k.key) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(self._abstract_params())[0]
        }

    def to_bf16(self, params, mask=None):
        """Cast the floating params to bfloat16 (where `mask` is True): returns a new tree."""
        return cast_floating(params, jnp.bfloat16, mask)

    def to_fp16(self, params, mask=None):
        return cast_floating(params, jnp.float16, mask)

    def to_fp32(self, params, mask=None):
        return cast_floating(params, jnp.float32, mask)
