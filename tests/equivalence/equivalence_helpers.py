"""One canonical checkpoint, three backends: build, run and differentiate each once per config.

A uniquely named module (not conftest) so that it imports the same way from every test file.
`Case.results(backend)` runs the backend's model on the case's inputs with every output requested
(hidden states, attentions, loss) and returns plain float32 numpy arrays by output name;
`Case.gradients(backend)` returns d(loss)/d(parameter) by canonical name in the canonical
(PyTorch) layout, mapped back through clip.common.weights.LEAF_RULES.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
jax = pytest.importorskip("jax")
torch.set_num_threads(min(2, torch.get_num_threads()))

import jax.numpy as jnp  # noqa: E402

import clip.flax  # noqa: E402
import clip.pt  # noqa: E402
import clip.tf  # noqa: E402
from backend_configs import CONFIGS  # noqa: E402  (the shared quick_gelu model)

from clip.common import weights  # noqa: E402
from clip.common.config import CLIPConfig  # noqa: E402
from clip.flax import loading as flax_loading  # noqa: E402

BACKENDS = ("pt", "tf", "flax")
PAIRS = (("pt", "tf"), ("pt", "flax"), ("tf", "flax"))
ATOL = 1e-5  # float32, every output and gradient

# The axes that change the computation: activation, depth, heads, patch and image size, projection
# width, batch size and padding (pad == eos in one), interpolate_pos_encoding at another image size.
CASES = {
    "quick_gelu_p4": dict(CONFIGS["quick_gelu"], lengths=(9, 5, 2), pixels=16, interpolate=False),
    "gelu_p8_pad_eos": dict(
        text=dict(
            vocab_size=80,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=12,
            projection_dim=40,
            eos_token_id=79,
            pad_token_id=79,
            hidden_act="gelu",
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=40,
            hidden_act="gelu",
        ),
        projection_dim=40,
        logit_scale_init_value=3.0,
        lengths=(7, 7),
        pixels=32,
        interpolate=False,
    ),
    "interpolate_p8": dict(
        text=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            projection_dim=16,
            eos_token_id=63,
            pad_token_id=1,
            hidden_act="quick_gelu",
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
            projection_dim=16,
            hidden_act="gelu",
        ),
        projection_dim=16,
        lengths=(8, 3, 5, 1),
        pixels=24,
        interpolate=True,
    ),
}


def make_config(name) -> CLIPConfig:
    spec = CASES[name]
    top = {k: v for k, v in spec.items() if k in ("projection_dim", "logit_scale_init_value")}
    return CLIPConfig(text_config=spec["text"], vision_config=spec["vision"], **top)


def write_checkpoint(config, directory, seed=0):
    """Random weights with noise on every tensor (non-trivial norms, biases, logit_scale) -> directory."""
    torch.manual_seed(seed)
    model = clip.pt.CLIPModel(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.save_pretrained(directory)
    return directory


def make_inputs(name, seed=0):
    spec = CASES[name]
    text, lengths = spec["text"], spec["lengths"]
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = np.full((len(lengths), length), text["pad_token_id"], np.int32)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : n - 1] = rng.integers(3, text["eos_token_id"] - 1, n - 1)
        ids[i, n - 1] = text["eos_token_id"]
        mask[i, :n] = 1
    pixels = rng.standard_normal((len(lengths), 3, spec["pixels"], spec["pixels"])).astype(np.float32)
    return ids, mask, pixels


def flatten_output(out) -> dict[str, np.ndarray]:
    """CLIPOutput -> {name: float32 numpy}: logits, embeds, loss, each tower's states and attentions."""
    result = {
        "loss": out.loss,
        "logits_per_image": out.logits_per_image,
        "logits_per_text": out.logits_per_text,
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
    }
    for tower, sub in (("text", out.text_model_output), ("vision", out.vision_model_output)):
        result[f"{tower}.last_hidden_state"] = sub.last_hidden_state
        result[f"{tower}.pooler_output"] = sub.pooler_output
        for i, h in enumerate(sub.hidden_states):
            result[f"{tower}.hidden_states.{i}"] = h
        for i, a in enumerate(sub.attentions):
            result[f"{tower}.attentions.{i}"] = a
    return {k: to_numpy(v) for k, v in result.items()}


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().numpy()
    if isinstance(value, tf.Tensor) or hasattr(value, "numpy") and not isinstance(value, jax.Array):
        return np.asarray(tf.cast(value, tf.float32).numpy())
    return np.asarray(jnp.asarray(value, jnp.float32))


class Case:
    """One config: its canonical directory, the three models and their (cached) results."""

    def __init__(self, name, directory, dtype="float32"):
        self.name, self.directory, self.dtype = name, directory, dtype
        self.spec = CASES[name]
        self.inputs = make_inputs(name)

    @functools.cached_property
    def models(self):
        bf16 = self.dtype == "bfloat16"
        return {
            "pt": clip.pt.CLIPModel.from_pretrained(self.directory, dtype=torch.bfloat16 if bf16 else torch.float32),
            "tf": clip.tf.TFCLIPModel.from_pretrained(self.directory, **({"dtype": "bfloat16"} if bf16 else {})),
            "flax": clip.flax.FlaxCLIPModel.from_pretrained(
                self.directory, **({"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16} if bf16 else {})
            ),
        }

    def _kwargs(self):
        return dict(
            return_loss=True,
            output_hidden_states=True,
            output_attentions=True,
            interpolate_pos_encoding=self.spec["interpolate"],
        )

    @functools.cache
    def results(self, backend) -> dict:
        ids, mask, pixels = self.inputs
        model = self.models[backend]
        if backend == "pt":
            with torch.no_grad():
                pixel_values = torch.from_numpy(pixels).to(model.dtype)
                out = model(
                    input_ids=torch.from_numpy(ids).long(),
                    pixel_values=pixel_values,
                    attention_mask=torch.from_numpy(mask),
                    **self._kwargs(),
                )
        elif backend == "tf":
            out = model(
                input_ids=tf.constant(ids),
                pixel_values=tf.constant(pixels),
                attention_mask=tf.constant(mask),
                **self._kwargs(),
            )
        else:  # jitted: eager JAX dispatches op by op and is many times slower on these tiny shapes
            out = jax.jit(lambda params: model(ids, pixels, attention_mask=mask, params=params, **self._kwargs()))(
                model.params
            )
        return flatten_output(out)

    @functools.cache
    def gradients(self, backend) -> dict:
        """d(contrastive loss)/d(parameter) by canonical name, canonical layout, float32 numpy."""
        ids, mask, pixels = self.inputs
        model = self.models[backend]
        kwargs = dict(return_loss=True, interpolate_pos_encoding=self.spec["interpolate"])
        if backend == "pt":
            model.zero_grad()
            model(
                input_ids=torch.from_numpy(ids).long(),
                pixel_values=torch.from_numpy(pixels),
                attention_mask=torch.from_numpy(mask),
                **kwargs,
            ).loss.backward()
            return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
        if backend == "tf":
            variables = model.canonical_variables()
            with tf.GradientTape() as tape:
                loss = model(
                    input_ids=tf.constant(ids),
                    pixel_values=tf.constant(pixels),
                    attention_mask=tf.constant(mask),
                    **kwargs,
                ).loss
            grads = tape.gradient(loss, [v for v, _ in variables.values()])
            return {
                name: weights.from_backend_layout(tf.convert_to_tensor(g).numpy(), kind, "tf")
                for (name, (_, kind)), g in zip(variables.items(), grads)
            }
        grads = jax.jit(jax.grad(lambda params: model(ids, pixels, attention_mask=mask, params=params, **kwargs).loss))(
            model.params
        )
        canonical = flax_loading.from_params(grads, flax_loading.expected_parameters(model))
        return {name: np.asarray(g) for name, g in canonical.items()}


def max_abs_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0
