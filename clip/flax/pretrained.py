"""The base of the Flax models: FlaxCLIPPreTrainedModel, over transformers' FlaxPreTrainedModel surface (one mixin).

Dtype casts of a params tree (to_fp16 / to_bf16 / to_fp32, with a mask), the `_do_init=False`
contract (no params kept: reading model.params or calling without params= raises, as in
transformers), input_shape, params_shape_tree, _from_config. Framework-neutral parts come from
clip.common.surface; the public model classes and their nnx modules are in clip.flax.modeling,
loading and saving in clip.flax.loading.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeAlias, TypeVar, cast, overload

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from clip.common import surface
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.flax.layers import CLIPEncoder

# the config of any of the model classes: the joint one or one tower's
AnyCLIPConfig = CLIPConfig | CLIPTextConfig | CLIPVisionConfig
# what the models' inputs may be: jax or numpy arrays
ArrayLike: TypeAlias = "jax.Array | np.ndarray"
# from_pretrained returns the class it is called on
ModelT = TypeVar("ModelT", bound="FlaxCLIPPreTrainedModel")

NOT_INITIALIZED = (
    "`params` cannot be accessed from model when the model is created with `_do_init=False`. "
    "You must call `init_weights` manually and store the params outside of the model and pass it "
    "explicitly where needed."
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

    # what the mixin reads from the model it is mixed into (FlaxCLIPPreTrainedModel sets them)
    config: AnyCLIPConfig
    config_class: type[AnyCLIPConfig]
    _abstract_params: Callable[[], dict[str, Any]]

    base_model_prefix = ""  # transformers' FlaxCLIP classes leave it empty
    main_input_name = "input_ids"
    framework = "flax"
    _is_initialized = False

    def default_input_shape(self) -> tuple:
        """transformers' input_shape: (1, 1) token ids and/or one NHWC image of the config's size."""
        if "Text" in type(self).__name__:
            return (1, 1)
        # an image shape is asked of the vision models and FlaxCLIPModel only
        vision = cast(CLIPVisionConfig, getattr(self.config, "vision_config", self.config))
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


def _str_keys(tree):
    return {str(k): _str_keys(v) if isinstance(v, dict) else v for k, v in tree.items()}


class FlaxCLIPPreTrainedModel(FlaxPreTrainedSurface):
    """Config, module and params; init, from_pretrained/save_pretrained, `params=` calls;
    transformers' FlaxPreTrainedModel surface in the mixin above.

    `params` is a plain nested dict (transformers' FlaxCLIP layout: "text_model" -> "encoder" ->
    "layers" -> "0" -> ...); `model(..., params=p)` runs the module with `p` and nothing else, so
    it can be jitted, differentiated and sharded like any pytree function. With `_do_init=False`
    the model keeps no params (transformers' contract): pass params= to every call. Assigning
    model.params afterwards is allowed here (transformers refuses it) and makes them the default.
    """

    config_class: type[AnyCLIPConfig] = CLIPConfig
    # the nnx module a model class wraps, set by each class in clip.flax.modeling (as in
    # transformers, the base class names none)
    module_class: type[nnx.Module]
    main_input_name = "input_ids"

    def __init__(
        self, config, input_shape=None, seed: int = 0, dtype=jnp.float32, _do_init: bool = True, param_dtype=jnp.float32
    ):
        config = self._take_config(config)
        self.config, self.dtype, self.param_dtype = config, dtype, param_dtype
        self.input_shape = input_shape if input_shape is not None else self.default_input_shape()
        self.key = jax.random.PRNGKey(seed)
        build = lambda: self.module_class(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))  # noqa: E731
        self.module = nnx.eval_shape(build)  # abstract: shapes only, no random numbers drawn
        self.graphdef = nnx.split(self.module)[0]
        self._param_shapes = _str_keys(nnx.to_pure_dict(nnx.state(self.module, nnx.Param)))
        if _do_init:
            self.params = self.init_weights(seed, self.input_shape)

    def init_weights(self, rng, input_shape=None, params=None, names=None) -> dict:
        """transformers' CLIP initialization (clip.common.params.init_arrays) as a params tree;
        `rng` an int seed or a jax key. With `params`, only the leaves it lacks are drawn (as
        transformers fills its missing keys); `names` (canonical) re-draws those, keeping the rest.
        `input_shape` is accepted for transformers' signature: every shape follows from the config."""
        from clip.flax import loading

        return loading.init_params(self, rng, names, params)

    def _abstract_params(self):
        return self._param_shapes

    @property
    def params_shape_tree(self) -> dict:
        return self._param_shapes

    @property
    def params(self) -> dict:
        self._check_initialized(None)
        return _str_keys(nnx.to_pure_dict(nnx.state(self.module, nnx.Param)))

    @params.setter
    def params(self, params):
        self.module = self._bind(params)
        self._is_initialized = True

    def _bind(self, params):
        """The module with `params` in it (traced values under jit); self.module when None."""
        if params is None:
            self._check_initialized(None)
            return self.module
        return nnx.merge(self.graphdef, nnx.State(nnx.restore_int_paths(params)))

    def _dropout_rng(self, train, dropout_rng):
        if not train:
            return None
        if dropout_rng is None and self._has_dropout():
            raise ValueError("train=True with attention_dropout > 0 needs a dropout_rng (a jax.random key)")
        return dropout_rng

    def _has_dropout(self):
        configs = [getattr(self.config, k) for k in ("text_config", "vision_config") if hasattr(self.config, k)] or [
            self.config
        ]
        return any(c.attention_dropout > 0 for c in configs)

    supports_gradient_checkpointing = True

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def enable_gradient_checkpointing(self):
        """transformers' Flax name: each encoder layer under nnx.remat (recomputed in backward)."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(
            node.gradient_checkpointing for _, node in nnx.iter_graph(self.module) if isinstance(node, CLIPEncoder)
        )

    def _set_gradient_checkpointing(self, enabled):
        for _, node in nnx.iter_graph(self.module):
            if isinstance(node, CLIPEncoder):
                node.gradient_checkpointing = enabled
        self.graphdef = nnx.split(self.module)[0]

    @overload
    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        name_or_path: str | os.PathLike[str],
        *args: Any,
        output_loading_info: Literal[False] = False,
        _do_init: Literal[True] = True,
        **kwargs: Any,
    ) -> ModelT: ...
    @overload
    @classmethod
    def from_pretrained(
        cls: type[ModelT], name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> tuple[Any, ...]: ...
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> FlaxCLIPPreTrainedModel | tuple[Any, ...]:
        """The model of a hub id or directory (transformers' arguments); a tuple with
        _do_init=False (model, params) and with output_loading_info=True (..., loading info)."""
        from clip.flax import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], params: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        from clip.flax import loading

        return loading.save_pretrained(self, save_directory, params=params, **kwargs)
