"""CLIP in JAX (flax.nnx): a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py (and of clip/pt/layers.py and towers.py in
clip/flax/layers.py and towers.py): the same class names, attribute names and order, so the
parameter tree is the canonical (PyTorch) names with Flax leaf names
(clip.common.weights.LEAF_RULES) and equals transformers' FlaxCLIP layout. The public wrappers
(FlaxCLIPModel, ...) hold `module`, `config` and `params` (a plain nested dict) and take
`params=` for pure functional use under `jax.jit` / `jax.grad`, as transformers' Flax models do.
Loading and saving live in clip.flax.loading, the contrastive loss in clip.flax.loss, the base
class FlaxCLIPPreTrainedModel in clip.flax.pretrained.

Training with optax, parameters sharded over a mesh::

    import jax, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from clip.flax import FlaxCLIPModel

    model = FlaxCLIPModel.from_pretrained("openai/clip-vit-base-patch32")
    mesh = Mesh(jax.devices(), ("model",))
    # shard every matrix over its last axis when it divides, replicate the rest
    def spec(x):
        return P(*([None] * (x.ndim - 1) + ["model"])) if x.ndim >= 2 and x.shape[-1] % mesh.size == 0 else P()
    params = jax.device_put(model.params, jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), model.params))
    tx = optax.adamw(1e-5)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, batch, rng):
        def loss_fn(params):
            return model(**batch, params=params, return_loss=True, train=True, dropout_rng=rng).loss
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # batch = processor(text=..., images=..., padding="max_length", return_tensors="np")
    params, opt_state, loss = train_step(params, opt_state, dict(batch), jax.random.key(0))

Shapes: B batch, L tokens, N patches, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from clip.common import checks, outputs, params
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput, ModelOutput, as_requested
from clip.flax.kernels import Linear
from clip.flax.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.flax.loss import clip_loss
from clip.flax.pretrained import ArrayLike, FlaxCLIPPreTrainedModel
from clip.flax.towers import CLIPTextEmbeddings, CLIPTextTransformer, CLIPVisionEmbeddings, CLIPVisionTransformer

# the blocks and towers stay importable from here
__all__ = [
    "CLIPAttention",
    "CLIPMLP",
    "CLIPEncoderLayer",
    "CLIPEncoder",
    "CLIPTextEmbeddings",
    "CLIPVisionEmbeddings",
    "CLIPTextTransformer",
    "CLIPVisionTransformer",
    "FlaxCLIPPreTrainedModel",
    "FlaxCLIPTextModel",
    "FlaxCLIPTextModelWithProjection",
    "FlaxCLIPVisionModel",
    "FlaxCLIPVisionModelWithProjection",
    "FlaxCLIPModel",
]


def _register_outputs():
    """The shared output containers as pytrees, so jitted functions can return them."""
    for cls in vars(outputs).values():
        if isinstance(cls, type) and issubclass(cls, outputs.ModelOutput) and dataclasses.is_dataclass(cls):
            try:
                jax.tree_util.register_dataclass(
                    cls, data_fields=[f.name for f in dataclasses.fields(cls)], meta_fields=[]
                )
            except ValueError:  # already registered
                pass


_register_outputs()


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = x.astype(jnp.float32)
    return (x32 / jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))).astype(x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """exp(logit_scale) * cosine similarity, (T,E) x (I,E) -> (T,I), finite in float16.

    In the dtype transformers' Flax CLIP returns: the promotion of the compute dtype and the
    parameters' (bfloat16 compute over float32 parameters: float32 logits).
    """
    cosine = text_embeds @ image_embeds.T  # unit vectors: |cosine| <= 1 in any dtype
    dtype = jnp.result_type(cosine.dtype, logit_scale.dtype)
    if dtype != jnp.float16:
        return cosine.astype(dtype) * jnp.exp(logit_scale).astype(dtype)
    logits = cosine.astype(jnp.float32) * jnp.exp(logit_scale.astype(jnp.float32))
    return jnp.clip(logits, -65504.0, 65504.0).astype(jnp.float16)


def _projection(in_dim, out_dim, dtype, param_dtype, rngs, use_bias=False):
    return Linear(in_dim, out_dim, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _split_rng(rng, n):
    return (None,) * n if rng is None else tuple(jax.random.split(rng, n))


class CLIPTextModule(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.text_model = CLIPTextTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        dropout_rng=None,
    ):
        return self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, dropout_rng=dropout_rng
        )


class CLIPTextModelWithProjectionModule(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.text_model = CLIPTextTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bias = params.has_parameter(config, "CLIPTextModelWithProjection", "text_projection.bias")  # the table decides
        self.text_projection = _projection(config.hidden_size, config.projection_dim, dtype, param_dtype, rngs, bias)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        dropout_rng=None,
    ):
        out = self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, dropout_rng=dropout_rng
        )
        embeds = self.text_projection(out.pooler_output)
        return CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


class CLIPVisionModule(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.vision_model = CLIPVisionTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        pixel_values=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        dropout_rng=None,
    ):
        return self.vision_model(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, dropout_rng=dropout_rng
        )


class CLIPVisionModelWithProjectionModule(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.vision_model = CLIPVisionTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bias = params.has_parameter(
            config, "CLIPVisionModelWithProjection", "visual_projection.bias"
        )  # the table decides
        self.visual_projection = _projection(config.hidden_size, config.projection_dim, dtype, param_dtype, rngs, bias)

    def __call__(
        self,
        pixel_values=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        dropout_rng=None,
    ):
        out = self.vision_model(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, dropout_rng=dropout_rng
        )
        embeds = self.visual_projection(out.pooler_output)
        return CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


class CLIPModule(nnx.Module):
    def __init__(self, config: CLIPConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        text, vision = config.text_config, config.vision_config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(config.logit_scale_init_value, param_dtype))
        self.text_model = CLIPTextTransformer(text, **kw)
        self.vision_model = CLIPVisionTransformer(vision, **kw)
        table = params.parameter_table(config, "CLIPModel")  # which optional parameters exist
        self.visual_projection = _projection(
            vision.hidden_size, config.projection_dim, dtype, param_dtype, rngs, "visual_projection.bias" in table
        )
        self.text_projection = _projection(
            text.hidden_size, config.projection_dim, dtype, param_dtype, rngs, "text_projection.bias" in table
        )

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, dropout_rng=None):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        out = self.text_model(input_ids, attention_mask, position_ids, pooled_only=True, dropout_rng=dropout_rng)
        return self.text_projection(out.pooler_output)

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False, dropout_rng=None):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        out = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True, dropout_rng=dropout_rng
        )
        return self.visual_projection(out.pooler_output)

    def __call__(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        return_loss=False,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        dropout_rng=None,
    ):
        checks.check_loss_inputs(return_loss, input_ids, pixel_values)
        vision_rng, text_rng = _split_rng(dropout_rng, 2)
        vision = self.vision_model(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, dropout_rng=vision_rng
        )
        text = self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, dropout_rng=text_rng
        )
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale[...])  # T,I
        loss = clip_loss(logits_per_text) if return_loss else None
        return CLIPOutput(loss, logits_per_text.T, logits_per_text, text_embeds, image_embeds, text, vision)


# -- public wrappers: config + module + params, functional calls ---------------------------------
def _as_array(x):
    # arrays (numpy, jax, tracers) pass as they are, so the checks see their real dtype
    return x if x is None or hasattr(x, "shape") else jnp.asarray(x)


class FlaxCLIPTextModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    config: CLIPTextConfig
    module_class = CLIPTextModule

    def __call__(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        out = module(input_ids, attention_mask, position_ids, attn, hidden, rng)
        return as_requested(out, return_dict)


class FlaxCLIPTextModelWithProjection(FlaxCLIPTextModel):
    module_class = CLIPTextModelWithProjectionModule


class FlaxCLIPVisionModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    config: CLIPVisionConfig
    module_class = CLIPVisionModule
    main_input_name = "pixel_values"

    def __call__(
        self,
        pixel_values: ArrayLike,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        pixel_values = _as_array(pixel_values)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return as_requested(module(pixel_values, attn, hidden, interpolate_pos_encoding, rng), return_dict)


class FlaxCLIPVisionModelWithProjection(FlaxCLIPVisionModel):
    module_class = CLIPVisionModelWithProjectionModule


class FlaxCLIPModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPConfig
    config: CLIPConfig
    module_class = CLIPModule

    def get_text_features(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_text_features(input_ids, attention_mask, position_ids, rng)

    def get_image_features(
        self,
        pixel_values: ArrayLike,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> jax.Array:
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pixel_values = _as_array(pixel_values)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_image_features(pixel_values, interpolate_pos_encoding, rng)

    def __call__(
        self,
        input_ids: ArrayLike,
        pixel_values: ArrayLike,
        attention_mask: ArrayLike | None = None,
        position_ids: ArrayLike | None = None,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CLIPOutput | tuple[Any, ...]:
        input_ids, pixel_values, attention_mask, position_ids = map(
            _as_array, (input_ids, pixel_values, attention_mask, position_ids)
        )
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        out = module(
            input_ids,
            pixel_values,
            attention_mask,
            position_ids,
            bool(return_loss),
            attn,
            hidden,
            interpolate_pos_encoding,
            rng,
        )
        return as_requested(out, return_dict)
