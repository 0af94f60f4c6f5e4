"""The share of transformers' model surface that works with ours, per backend (issue 14's measure).

Each entry is one call a transformers user or its test mixins (ModelTesterMixin, TFModelTesterMixin,
FlaxModelTesterMixin) makes, written once against a namespace `ns` holding the classes: run on
transformers' classes and on ours, with the same tiny weights. A call "works" when it returns
(and, where both return arrays, the arrays agree to 1e-4) or when both raise the same exception
type. The share counts, of the calls that work with transformers (or raise as its contract), those that
work with ours; calls only ours runs are listed with "+" and left out.

    python bench/bench_surface.py [pt|tf|flax ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
import types

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=16,
    projection_dim=24,
    eos_token_id=98,
    pad_token_id=0,
)
VISION = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=4,
    projection_dim=24,
)


def batch(batch_size=3, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 97, (batch_size, length))
    ids[:, -1] = 98
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "pixel_values": rng.standard_normal((batch_size, 3, 16, 16)).astype(np.float32),
    }


def arrays_of(value):
    """Every array in a (nested) output, in order."""
    if value is None:
        return []
    if hasattr(value, "detach"):  # torch
        return [value.detach().float().cpu().numpy()]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return [np.asarray(value, np.float32)]
    if hasattr(value, "to_tuple"):
        return arrays_of(value.to_tuple())
    if isinstance(value, dict):
        return [a for k in sorted(value) for a in arrays_of(value[k])]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in arrays_of(v)]
    return []


def outcome(fn, ns):
    try:
        return "ok", fn(ns)
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return "raised", type(error)


def agrees(mine, theirs) -> bool:
    if mine[0] != theirs[0]:
        return False
    if mine[0] == "raised":  # ours may raise a subclass (CheckpointShapeError is a RuntimeError)
        return issubclass(mine[1], theirs[1])
    a, b = arrays_of(mine[1]), arrays_of(theirs[1])
    if a and b:
        return len(a) == len(b) and all(x.shape == y.shape and np.abs(x - y).max() <= 1e-4 for x, y in zip(a, b))
    if isinstance(theirs[1], (bool, int, float, str, type(None))):
        return mine[1] == theirs[1]
    return True


def beyond(row) -> bool:
    return row[1][0] == "raised" and row[2][0] == "ok"


def measure(calls: dict, theirs_ns, ours_ns):
    rows = []
    for name, fn in calls.items():
        theirs, mine = outcome(fn, theirs_ns), outcome(fn, ours_ns)
        rows.append((name, theirs, mine, agrees(mine, theirs)))
    # a call transformers fails (a dict config it refuses, a missing `datasets`, its own bugs) and
    # ours runs is reported with "+" and left out of the share
    counted = [r for r in rows if not beyond(r)]
    works = sum(r[3] for r in counted)
    return rows, works, len(counted)


# -- PyTorch --------------------------------------------------------------------------------------
def pt_calls():
    import torch
    import transformers

    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24, num_labels=3)
    torch.manual_seed(0)
    seed_dir = tempfile.mkdtemp()
    transformers.CLIPModel(cfg).save_pretrained(seed_dir)
    t = {k: torch.from_numpy(v) for k, v in batch().items()}
    text = {k: t[k] for k in ("input_ids", "attention_mask")}

    def model(ns, cls="CLIPModel", **kwargs):
        return getattr(ns, cls).from_pretrained(seed_dir, **kwargs).eval()

    def run(m, inputs=None, **kwargs):
        with torch.no_grad():
            return m(**(inputs if inputs is not None else t), **kwargs)

    def tmp():
        return tempfile.mkdtemp()

    def save_load(ns, **save):
        d = tmp()
        model(ns).save_pretrained(d, **save)
        return run(ns.CLIPModel.from_pretrained(d).eval())

    def hidden_from_config(ns):
        m = model(ns, attn_implementation="eager")
        m.config.output_hidden_states = True
        m.config.output_attentions = True
        return run(m)

    def classifier_mismatch(ns, ignore):
        d = tmp()
        ns.CLIPForImageClassification(cfg).save_pretrained(d)
        m = ns.CLIPForImageClassification.from_pretrained(d, num_labels=5, ignore_mismatched_sizes=ignore)
        return tuple(m.classifier.weight.shape)

    def meta(ns):
        with torch.device("meta"):
            return ns.CLIPModel.from_pretrained(seed_dir)

    def set_text_embeddings(ns):
        m = model(ns, "CLIPTextModel")
        torch.manual_seed(1)
        m.set_input_embeddings(torch.nn.Embedding(99, 32))
        return run(m, text)

    def trace(ns):
        m = model(ns, torchscript=True)
        traced = torch.jit.trace(m, (t["input_ids"], t["pixel_values"]))
        return traced(t["input_ids"], t["pixel_values"])[0]

    def train_step(ns):
        m = model(ns).train()
        loss = m(**t, return_loss=True).loss
        loss.backward()
        return m.text_projection.weight.grad

    return {
        "Model(transformers config)": lambda ns: run(ns.CLIPModel(cfg).eval()).logits_per_image.shape,
        "Model(config dict)": lambda ns: run(ns.CLIPModel(cfg.to_dict()).eval()).logits_per_image.shape,
        "from_pretrained + forward": lambda ns: run(model(ns)),
        "forward return_dict=False": lambda ns: run(model(ns), return_dict=False),
        "forward output_hidden_states/attentions": lambda ns: run(
            model(ns, attn_implementation="eager"), output_hidden_states=True, output_attentions=True
        ),
        "config.output_* defaults": hidden_from_config,
        "config.return_dict=False": lambda ns: run(model(ns, return_dict=False)),
        "get_text_features": lambda ns: model(ns).get_text_features(**text),
        "get_image_features": lambda ns: model(ns).get_image_features(pixel_values=t["pixel_values"]),
        "text model forward": lambda ns: run(model(ns, "CLIPTextModel"), text),
        "vision model forward": lambda ns: run(
            model(ns, "CLIPVisionModelWithProjection"), {"pixel_values": t["pixel_values"]}
        ),
        "save/load safetensors": lambda ns: save_load(ns),
        "save/load safe_serialization=False": lambda ns: save_load(ns, safe_serialization=False),
        "save/load max_shard_size": lambda ns: save_load(ns, max_shard_size="20KB"),
        "from_pretrained output_loading_info": lambda ns: sorted(model_info(ns, seed_dir)),
        "from_pretrained(None, config, state_dict)": lambda ns: run(
            ns.CLIPModel.from_pretrained(None, config=cfg, state_dict=model(ns).state_dict()).eval()
        ),
        "from_pretrained dtype=bfloat16": lambda ns: str(model(ns, dtype=torch.bfloat16).dtype),
        "from_pretrained torch_dtype=float16": lambda ns: str(model(ns, torch_dtype=torch.float16).dtype),
        "_from_config(attn_implementation=eager)": lambda ns: (
            ns.CLIPModel._from_config(cfg, attn_implementation="eager").config._attn_implementation
        ),
        "set_attn_implementation": lambda ns: (lambda m: (m.set_attn_implementation("eager"), run(m))[1])(model(ns)),
        "eager == sdpa": lambda ns: run(model(ns, attn_implementation="eager")),
        "num_parameters()": lambda ns: model(ns).num_parameters(),
        "num_parameters(only_trainable)": lambda ns: model(ns).num_parameters(only_trainable=True),
        "num_parameters(exclude_embeddings)": lambda ns: model(ns).num_parameters(exclude_embeddings=True),
        "get_input_embeddings (text)": lambda ns: (
            type(model(ns, "CLIPTextModel").get_input_embeddings()).__mro__[-3].__name__
        ),
        "get_input_embeddings (CLIPModel)": lambda ns: model(ns).get_input_embeddings(),
        "set_input_embeddings (text)": set_text_embeddings,
        "get_output_embeddings": lambda ns: model(ns).get_output_embeddings(),
        "get_position_embeddings": lambda ns: model(ns).get_position_embeddings(),
        "resize_position_embeddings": lambda ns: model(ns).resize_position_embeddings(20),
        "tie_weights": lambda ns: model(ns).tie_weights(),
        "base_model_prefix": lambda ns: ns.CLIPModel.base_model_prefix,
        "main_input_name (vision)": lambda ns: ns.CLIPVisionModel.main_input_name,
        "config_class": lambda ns: ns.CLIPTextModel.config_class.__name__,
        "can_generate": lambda ns: ns.CLIPModel.can_generate(),
        "_supports_sdpa": lambda ns: ns.CLIPModel._supports_sdpa,
        "_supports_flash_attn": lambda ns: (ns.CLIPModel._supports_flash_attn, ns.CLIPVisionModel._supports_flash_attn),
        "_can_set_attn_implementation": lambda ns: ns.CLIPModel._can_set_attn_implementation(),
        "_no_split_modules": lambda ns: ns.CLIPModel._no_split_modules,
        "dummy_inputs": lambda ns: sorted(model(ns).dummy_inputs),
        "ignore_mismatched_sizes=False": lambda ns: classifier_mismatch(ns, False),
        "ignore_mismatched_sizes=True": lambda ns: classifier_mismatch(ns, True),
        "meta device context refused": meta,
        "state_dict keys": lambda ns: sorted(model(ns).state_dict()),
        "model.to(bfloat16) forward": lambda ns: str(
            run(
                model(ns).to(torch.bfloat16), {**t, "pixel_values": t["pixel_values"].bfloat16()}
            ).logits_per_image.dtype
        ),
        "training step gradients": train_step,
        "torch.jit.trace (torchscript=True)": trace,
        "gradient_checkpointing_enable": lambda ns: (
            lambda m: (m.gradient_checkpointing_enable(), m.is_gradient_checkpointing)[1]
        )(model(ns).train()),
        "dtype / device": lambda ns: (str(model(ns).dtype), str(model(ns).device)),
        "config.use_return_dict / is_encoder_decoder": lambda ns: (
            model(ns).config.use_return_dict,
            model(ns).config.is_encoder_decoder,
        ),
        "config.get_text_config": lambda ns: model(ns).config.get_text_config().hidden_size,
        "config.to_diff_dict projection_dim": lambda ns: model(ns).config.to_diff_dict()["projection_dim"],
    }


def model_info(ns, path):
    return ns.CLIPModel.from_pretrained(path, output_loading_info=True)[1]


# -- TensorFlow -----------------------------------------------------------------------------------
def tf_calls():
    import keras
    import tensorflow as tf
    import torch
    import transformers

    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24)
    torch.manual_seed(0)
    seed_dir = tempfile.mkdtemp()
    reference = transformers.CLIPModel(cfg)
    reference.save_pretrained(seed_dir)  # ours reads model.safetensors
    reference.save_pretrained(seed_dir + "/bin", safe_serialization=False)  # transformers' TF reads the .bin
    b = batch()
    t = {k: tf.constant(v) for k, v in b.items()}
    text = {k: t[k] for k in ("input_ids", "attention_mask")}

    def model(ns, cls="TFCLIPModel"):
        path = seed_dir if ns.ours else seed_dir + "/bin"
        kwargs = {} if ns.ours else {"from_pt": True}
        return getattr(ns, cls).from_pretrained(path, **kwargs)

    def keras_save(ns):
        m = model(ns)
        m(t)
        path = os.path.join(tempfile.mkdtemp(), "m.keras" if ns.ours else "m.h5")
        m.save(path)
        loaded = keras.models.load_model(path) if ns.ours else tf.keras.models.load_model(path)
        return loaded(t)

    def save_load(ns, **kw):
        d = tempfile.mkdtemp()
        model(ns).save_pretrained(d, **kw)
        return ns.TFCLIPModel.from_pretrained(d)(t)

    def fit(ns):
        m = model(ns)
        m.compile(optimizer=keras.optimizers.SGD(0.01) if ns.ours else tf.keras.optimizers.SGD(0.01))
        return m.fit(
            {**t, "return_loss": tf.constant(True)} if not ns.ours else t, epochs=1, batch_size=3, verbose=0
        ).history["loss"]

    return {
        "Model(transformers config)": lambda ns: ns.TFCLIPModel(cfg)(**t).logits_per_image.shape,
        "Model(config dict)": lambda ns: ns.TFCLIPModel(cfg.to_dict())(**t).logits_per_image.shape,
        "from_pretrained + call(**kwargs)": lambda ns: model(ns)(**t),
        "call(dict)": lambda ns: model(ns)(t),
        "call(BatchEncoding)": lambda ns: model(ns)(transformers.BatchEncoding(b)),
        "call(BatchFeature) vision": lambda ns: model(ns, "TFCLIPVisionModel")(
            transformers.BatchFeature({"pixel_values": b["pixel_values"]})
        ),
        "call([input_ids, pixel_values, mask])": lambda ns: model(ns)(
            [t["input_ids"], t["pixel_values"], t["attention_mask"]]
        ),
        "call return_dict=False": lambda ns: model(ns)(t, return_dict=False),
        "call output_hidden_states": lambda ns: model(ns)(t, output_hidden_states=True),
        "text model call(dict)": lambda ns: model(ns, "TFCLIPTextModel")(text),
        "get_text_features": lambda ns: model(ns).get_text_features(**text),
        "get_image_features": lambda ns: model(ns).get_image_features(pixel_values=t["pixel_values"]),
        "input_signature": lambda ns: sorted(
            (k, str(v.dtype), str(v.shape)) for k, v in model(ns).input_signature.items()
        ),
        "dummy_inputs call": lambda ns: (lambda m: m(m.dummy_inputs))(model(ns)),
        "serving(dummy_inputs)": lambda ns: (lambda m: m.serving(m.dummy_inputs)["logits_per_image"])(model(ns)),
        "serving_output": lambda ns: (lambda m: m.serving_output(m(t)))(model(ns))["logits_per_image"],
        "prepare_tf_dataset": lambda ns: model(ns).prepare_tf_dataset({k: list(v) for k, v in b.items()}, batch_size=2),
        "keras save / load_model, dict call": keras_save,
        "save_pretrained / from_pretrained": save_load,
        "save_pretrained max_shard_size": lambda ns: save_load(ns, max_shard_size="20KB"),
        "save_pretrained saved_model=True": lambda ns: (
            lambda d: (
                model(ns).save_pretrained(d, saved_model=True),
                os.path.isdir(os.path.join(d, "saved_model", "1")),
            )[1]
        )(tempfile.mkdtemp()),
        "num_parameters()": lambda ns: (lambda m: (m(t), m.num_parameters())[1])(model(ns)),
        "num_parameters(only_trainable)": lambda ns: (lambda m: (m(t), m.num_parameters(only_trainable=True))[1])(
            model(ns)
        ),
        "get_input_embeddings (text)": lambda ns: model(ns, "TFCLIPTextModel").get_input_embeddings() is not None,
        "get_output_embeddings": lambda ns: model(ns).get_output_embeddings(),
        "base_model_prefix": lambda ns: ns.TFCLIPModel.base_model_prefix,
        "main_input_name": lambda ns: ns.TFCLIPVisionModel.main_input_name,
        "config_class": lambda ns: ns.TFCLIPTextModel.config_class.__name__,
        "can_generate": lambda ns: ns.TFCLIPModel.can_generate(),
        "framework": lambda ns: model(ns).framework,
        "_from_config": lambda ns: ns.TFCLIPModel._from_config(cfg)(**t).logits_per_image.shape,
        "compile + fit": fit,
        "tf.function(model)": lambda ns: tf.function(model(ns))(t),
    }


# -- Flax -----------------------------------------------------------------------------------------
def flax_calls():
    import jax
    import jax.numpy as jnp
    import transformers

    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=24)
    seed_dir = tempfile.mkdtemp()
    transformers.FlaxCLIPModel(cfg, seed=0).save_pretrained(seed_dir)  # flax_model.msgpack
    b = batch()
    text = {k: b[k] for k in ("input_ids", "attention_mask")}

    def model(ns, cls="FlaxCLIPModel", **kw):
        return getattr(ns, cls).from_pretrained(seed_dir, **kw)

    def mask_of(params):
        return jax.tree_util.tree_map_with_path(lambda p, _: "layer_norm" not in jax.tree_util.keystr(p), params)

    def no_init(ns, what):
        m = ns.FlaxCLIPModel(cfg, _do_init=False)
        return m.params if what == "params" else m(**b)

    def save_load(ns, **kw):
        m = model(ns)
        d = tempfile.mkdtemp()
        m.save_pretrained(d, **kw)
        return ns.FlaxCLIPModel.from_pretrained(d)(**b)

    return {
        "Model(transformers config)": lambda ns: ns.FlaxCLIPModel(cfg)(**b).logits_per_image.shape,
        "Model(config dict)": lambda ns: ns.FlaxCLIPModel(cfg.to_dict())(**b).logits_per_image.shape,
        "from_pretrained + call": lambda ns: model(ns)(**b),
        "call return_dict=False": lambda ns: model(ns)(**b, return_dict=False),
        "call output_hidden_states": lambda ns: model(ns)(**b, output_hidden_states=True),
        "jit(call) with params": lambda ns: (lambda m: jax.jit(lambda p: m(**b, params=p).logits_per_image)(m.params))(
            model(ns)
        ),
        "get_text_features": lambda ns: model(ns).get_text_features(**text),
        "get_image_features": lambda ns: model(ns).get_image_features(b["pixel_values"]),
        "text model call": lambda ns: model(ns, "FlaxCLIPTextModel")(**text),
        "_do_init=False: params raises": lambda ns: no_init(ns, "params"),
        "_do_init=False: call without params raises": lambda ns: no_init(ns, "call"),
        "from_pretrained(_do_init=False)": lambda ns: (lambda mp: mp[0](**b, params=mp[1]))(model(ns, _do_init=False)),
        "init_weights(rng, input_shape)": lambda ns: (
            lambda m: jax.tree.map(jnp.shape, m.init_weights(jax.random.PRNGKey(0), m.input_shape))
        )(ns.FlaxCLIPModel(cfg, _do_init=False)),
        "input_shape": lambda ns: ns.FlaxCLIPModel(cfg, _do_init=False).input_shape,
        "params_shape_tree": lambda ns: jax.tree.map(
            jnp.shape, dict(ns.FlaxCLIPModel(cfg, _do_init=False).params_shape_tree)
        ),
        "to_bf16": lambda ns: (lambda m: jax.tree.map(lambda x: str(x.dtype), m.to_bf16(m.params)))(model(ns)),
        "to_fp16 with mask": lambda ns: (
            lambda m: jax.tree.map(lambda x: str(x.dtype), m.to_fp16(m.params, mask_of(m.params)))
        )(model(ns)),
        "to_fp32": lambda ns: (lambda m: jax.tree.map(lambda x: str(x.dtype), m.to_fp32(m.to_bf16(m.params))))(
            model(ns)
        ),
        "from_pretrained dtype=bfloat16": lambda ns: str(model(ns, dtype=jnp.bfloat16)(**b).text_embeds.dtype),
        "save_pretrained / from_pretrained": save_load,
        "save_pretrained(params=)": lambda ns: (
            lambda m: (m.save_pretrained(tempfile.mkdtemp(), params=m.params), True)[1]
        )(model(ns)),
        "save_pretrained max_shard_size": lambda ns: save_load(ns, max_shard_size="20KB"),
        "module attribute": lambda ns: model(ns).module is not None,
        "base_model_prefix": lambda ns: ns.FlaxCLIPModel.base_model_prefix,
        "main_input_name": lambda ns: ns.FlaxCLIPVisionModel.main_input_name,
        "config_class": lambda ns: ns.FlaxCLIPModel.config_class.__name__,
        "can_generate": lambda ns: ns.FlaxCLIPModel.can_generate(),
        "framework": lambda ns: model(ns).framework,
        "enable_gradient_checkpointing": lambda ns: (lambda m: (m.enable_gradient_checkpointing(), m(**b))[1])(
            model(ns)
        ),
        "train=True with dropout_rng": lambda ns: model(ns)(**b, train=True, dropout_rng=jax.random.PRNGKey(0)),
    }


def _say(result) -> str:
    return f"raised {result[1].__name__}" if result[0] == "raised" else "ok"


def namespace(backend: str, ours: bool):
    if ours:
        import importlib

        ns = types.SimpleNamespace(**vars(importlib.import_module(f"clip.{backend}")))
    else:
        import transformers

        ns = types.SimpleNamespace(
            **{n: getattr(transformers, n) for n in dir(transformers) if "CLIP" in n and not n.startswith("_")}
        )
    ns.ours = ours
    return ns


def main(backends):
    import transformers

    transformers.logging.set_verbosity_error()
    makers = {"pt": pt_calls, "tf": tf_calls, "flax": flax_calls}
    summary = []
    for backend in backends:
        rows, works, total = measure(makers[backend](), namespace(backend, False), namespace(backend, True))
        print(
            f"\n## {backend}: {works}/{total} = {100 * works / total:.0f}% of the calls that work with transformers work with ours"
        )
        for name, theirs, mine, ok in rows:
            mark = "ok " if ok else ("+  " if beyond((name, theirs, mine, ok)) else "-- ")
            detail = "" if ok else f"  (transformers: {_say(theirs)}; ours: {_say(mine)})"
            print(f"  {mark}{name}{detail}")
        summary.append((backend, works, total))
    print("\n| backend | calls working with transformers | also with ours | share |\n|---|---|---|---|")
    for backend, works, total in summary:
        print(f"| {backend} | {total} | {works} | {100 * works / total:.0f}% |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["pt", "tf", "flax"])
