"""CLIP in JAX (flax.nnx): a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py (and of clip/pt/layers.py and towers.py in
clip/flax/layers.py and towers.py): the same class names, attribute names and order, so the parameter tree is the canonical (PyTorch) names with Flax leaf names
(clip.common.weights.LEAF_RULES) and equals transformers' FlaxCLIP layout. The public wrappers
(FlaxCLIPModel, ...) hold `module`, `config` and `params` (a plain nested dict) and take
`params=` for pure functional use under `jax.jit` / `jax.grad`, as transformers' Flax models do.
Loading and saving live in clip.flax.loading, the contrastive loss in clip.flax.loss.

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

import jax
import jax.numpy as jnp
from flax import nnx

from clip.common import checks, outputs, params
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput, as_requested
from clip.flax.kernels import Linear
from clip.flax.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.flax.loss import clip_loss
from clip.flax.pretrained import FlaxPreTrainedSurface
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
def _str_keys(tree):
    return {str(k): _str_keys(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _as_array(x):
    # arrays (numpy, jax, tracers) pass as they are, so the checks see their real dtype
    return x if x is None or hasattr(x, "shape") else jnp.asarray(x)


class FlaxCLIPPreTrainedModel(FlaxPreTrainedSurface):
    """Config, module and params; init, from_pretrained/save_pretrained, `params=` calls;
    transformers' FlaxPreTrainedModel surface in clip.flax.pretrained.

    `params` is a plain nested dict (transformers' FlaxCLIP layout: "text_model" -> "encoder" ->
    "layers" -> "0" -> ...); `model(..., params=p)` runs the module with `p` and nothing else, so
    it can be jitted, differentiated and sharded like any pytree function. With `_do_init=False`
    the model keeps no params (transformers' contract): pass params= to every call. Assigning
    model.params afterwards is allowed here (transformers refuses it) and makes them the default.
    """

    config_class = CLIPConfig
    module_class = CLIPModule
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

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.flax import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, params=None, **kwargs):
        from clip.flax import loading

        return loading.save_pretrained(self, save_directory, params=params, **kwargs)


class FlaxCLIPTextModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    module_class = CLIPTextModule

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        out = module(input_ids, attention_mask, position_ids, attn, hidden, rng)
        return as_requested(out, return_dict)


class FlaxCLIPTextModelWithProjection(FlaxCLIPTextModel):
    module_class = CLIPTextModelWithProjectionModule


class FlaxCLIPVisionModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    module_class = CLIPVisionModule
    main_input_name = "pixel_values"

    def __call__(
        self,
        pixel_values,
        params=None,
        dropout_rng=None,
        train=False,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        pixel_values = _as_array(pixel_values)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return as_requested(module(pixel_values, attn, hidden, interpolate_pos_encoding, rng), return_dict)


class FlaxCLIPVisionModelWithProjection(FlaxCLIPVisionModel):
    module_class = CLIPVisionModelWithProjectionModule


class FlaxCLIPModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPConfig
    module_class = CLIPModule

    def get_text_features(
        self, input_ids, attention_mask=None, position_ids=None, params=None, dropout_rng=None, train=False
    ):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_text_features(input_ids, attention_mask, position_ids, rng)

    def get_image_features(
        self, pixel_values, params=None, dropout_rng=None, train=False, interpolate_pos_encoding=False
    ):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pixel_values = _as_array(pixel_values)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_image_features(pixel_values, interpolate_pos_encoding, rng)

    def __call__(
        self,
        input_ids,
        pixel_values,
        attention_mask=None,
        position_ids=None,
        params=None,
        dropout_rng=None,
        train=False,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
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
