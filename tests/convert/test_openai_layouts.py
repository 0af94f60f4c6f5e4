"""OpenAI and open_clip checkpoints -> canonical: the converted model computes what the original module does.

The reference is tools/make_conversion_fixtures.py's OpenAIStyleCLIP (OpenAI's attribute names,
nn.MultiheadAttention's fused in_proj, LND towers, argmax text pooling), run as saved (the
TorchScript archive) or rebuilt here at other sizes; the converted directories are loaded by
clip.pt and by transformers' CLIPModel.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, torch.get_num_threads()))

from clip import convert  # noqa: E402
from clip.common.formats import open_clip, openai  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "conversion")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_conversion_fixtures as reference  # noqa: E402

SOURCES = {
    "openai_state_dict": (os.path.join(FIXTURES, "openai_vit.pt"), "openai", "openai"),
    "openai_torchscript": (os.path.join(FIXTURES, "openai_vit_jit.pt"), "openai", "openai"),
    "open_clip_checkpoint": (
        os.path.join(FIXTURES, "open_clip", "open_clip_pytorch_model.bin"),
        "open_clip",
        "open_clip",
    ),
}


def run_pt(directory, ids, pixels):
    import clip.pt

    model = clip.pt.CLIPModel.from_pretrained(directory)
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits_per_image.numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    for name, (path, _, _) in SOURCES.items():
        out[name] = str(tmp_path_factory.mktemp(name) / "model")
        convert.convert(path, out[name])
    return out


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_detected_format(name):
    path, fmt, _ = SOURCES[name]
    assert convert.detect_format(path) == fmt


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_converted_matches_reference_logits(converted, name):
    _, _, key = SOURCES[name]
    ref = np.load(os.path.join(FIXTURES, "reference.npz"))
    logits = run_pt(converted[name], ref[f"{key}_input_ids"], ref[f"{key}_pixel_values"])
    np.testing.assert_allclose(logits, ref[f"{key}_logits_per_image"], atol=1e-5, rtol=0)
    assert np.ptp(logits) > 1e-2


def test_torchscript_runs_as_saved_and_matches(converted):
    """The archive itself is the reference: load it, run it, compare with the converted model."""
    module = torch.jit.load(SOURCES["openai_torchscript"][0]).float()
    ids, pixels = reference.inputs(reference.OPENAI, batch=4, seed=3)
    with torch.no_grad():
        expected = module(torch.from_numpy(pixels), torch.from_numpy(ids))[0].numpy()
    np.testing.assert_allclose(run_pt(converted["openai_torchscript"], ids, pixels), expected, atol=1e-5, rtol=0)


def test_inferred_config(converted):
    import json

    with open(os.path.join(converted["openai_torchscript"], "config.json")) as f:
        config = json.load(f)
    spec = reference.OPENAI
    text, vision = config["text_config"], config["vision_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (
        spec["transformer_width"],
        spec["transformer_layers"],
        1,
    )
    assert (text["vocab_size"], text["max_position_embeddings"], text["eos_token_id"]) == (
        spec["vocab_size"],
        spec["context_length"],
        spec["vocab_size"] - 1,
    )
    assert (vision["image_size"], vision["patch_size"], vision["intermediate_size"]) == (
        spec["image_resolution"],
        spec["vision_patch_size"],
        spec["vision_mlp"],
    )
    assert config["projection_dim"] == spec["embed_dim"] and text["hidden_act"] == vision["hidden_act"] == "quick_gelu"
    with open(os.path.join(converted["open_clip_checkpoint"], "config.json")) as f:
        config = json.load(f)
    assert config["vision_config"]["num_attention_heads"] == 2 and config["text_config"]["num_attention_heads"] == 2
    assert config["vision_config"]["hidden_act"] == "gelu"  # open_clip's default, no quick_gelu in its config
    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.isfile(os.path.join(converted["open_clip_checkpoint"], name))


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_bigger_model_all_outputs(tmp_path, act):
    """Two layers, two heads of 64, 4x MLP: embeddings of both towers, via clip.pt and transformers."""
    import transformers

    spec = dict(
        reference.OPENAI,
        vision_width=128,
        vision_heads=2,
        vision_mlp=512,
        transformer_width=128,
        transformer_heads=2,
        transformer_layers=2,
        vision_layers=2,
        text_mlp=512,
        act=act,
    )
    module = reference.build(spec, seed=5).float()
    src = tmp_path / ("open_clip_model.pt" if act == "gelu" else "ViT-tiny.pt")
    torch.save(module.state_dict(), src)
    convert.convert(src, tmp_path / "out", processor=False)
    ids, pixels = reference.inputs(spec, batch=4, seed=1)
    with torch.no_grad():
        image, text = module.encode_image(torch.from_numpy(pixels)), module.encode_text(torch.from_numpy(ids))
        logits = module(torch.from_numpy(pixels), torch.from_numpy(ids))[0]
    import clip.pt

    ours = clip.pt.CLIPModel.from_pretrained(tmp_path / "out")
    theirs = transformers.CLIPModel.from_pretrained(tmp_path / "out")
    for model in (ours, theirs):
        with torch.no_grad():
            np.testing.assert_allclose(
                model.get_image_features(pixel_values=torch.from_numpy(pixels)).numpy(),
                image.numpy(),
                atol=1e-5,
                rtol=0,
            )
            np.testing.assert_allclose(
                model.get_text_features(input_ids=torch.from_numpy(ids)).numpy(), text.numpy(), atol=1e-5, rtol=0
            )
            out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels))
        np.testing.assert_allclose(out.logits_per_image.numpy(), logits.numpy(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["openai_state_dict", "open_clip_checkpoint"])
def test_layout_round_trip_is_exact(tmp_path, name):
    """foreign -> canonical -> foreign gives back every tensor bit for bit (open_clip: unwrapped)."""
    path, fmt, _ = SOURCES[name]
    original = open_clip.unwrap(convert._torch_tensors(torch.load(path, weights_only=True), path))
    canonical = tmp_path / "canonical"
    convert.convert(path, canonical, processor=False)
    back = tmp_path / "back.pt"
    convert.convert(canonical, back, to_format=fmt)
    state = convert._torch_tensors(torch.load(back, weights_only=True), str(back))
    assert list(state) == [n for n in original if n not in openai.IGNORED] or sorted(state) == sorted(original)
    for key, value in original.items():
        assert state[key].dtype == value.dtype and np.array_equal(state[key], value), key
    # and it reads back as the same format
    assert convert.detect_format(str(back)) in ("openai", "open_clip")


def test_qkv_split_and_transposes_are_data():
    rng = np.random.default_rng(0)
    fused = rng.standard_normal((12, 4)).astype(np.float32)
    proj = rng.standard_normal((4, 3)).astype(np.float32)
    arrays, names = openai.to_canonical({"transformer.resblocks.7.attn.in_proj_weight": fused, "visual.proj": proj})
    np.testing.assert_array_equal(arrays["text_model.encoder.layers.7.self_attn.q_proj.weight"], fused[:4])
    np.testing.assert_array_equal(arrays["text_model.encoder.layers.7.self_attn.k_proj.weight"], fused[4:8])
    np.testing.assert_array_equal(arrays["text_model.encoder.layers.7.self_attn.v_proj.weight"], fused[8:])
    np.testing.assert_array_equal(arrays["visual_projection.weight"], proj.T)
    assert names["text_model.encoder.layers.7.self_attn.v_proj.weight"] == "transformer.resblocks.7.attn.in_proj_weight"
    back = openai.from_canonical(arrays)
    np.testing.assert_array_equal(back["transformer.resblocks.7.attn.in_proj_weight"], fused)


def test_open_clip_known_head_widths_and_config():
    # ViT-H-14's image tower: width 1280, heads of 80 (16 heads), not 1280 // 64 = 20
    shapes = {
        "visual.conv1.weight": (1280, 3, 14, 14),
        "visual.positional_embedding": (257, 1280),
        "text_projection": (1024, 1024),
        "positional_embedding": (77, 1024),
        "token_embedding.weight": (49408, 1024),
        "ln_final.weight": (1024,),
        "visual.transformer.resblocks.0.mlp.c_fc.weight": (5120, 1280),
        "transformer.resblocks.0.mlp.c_fc.weight": (4096, 1024),
    }
    state = {k: np.empty(v, np.float16) for k, v in shapes.items()}
    config = open_clip.infer_config(state)
    assert config["vision_config"]["num_attention_heads"] == 16 and config["text_config"]["num_attention_heads"] == 16
    assert config["vision_config"]["image_size"] == 224 and config["vision_config"]["hidden_act"] == "gelu"
    quick = open_clip.infer_config(
        state, model_cfg={"model_cfg": {"quick_gelu": True, "vision_cfg": {"head_width": 64}}}
    )
    assert quick["vision_config"]["num_attention_heads"] == 20 and quick["text_config"]["hidden_act"] == "quick_gelu"
    # the same shapes as OpenAI's layout: OpenAI's rule
    assert openai.infer_config(state)["vision_config"]["num_attention_heads"] == 20


def test_custom_text_prefix(tmp_path):
    checkpoint = torch.load(SOURCES["open_clip_checkpoint"][0], weights_only=True)
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    custom = {("text." + k if not k.startswith(("visual.", "logit_scale")) else k): v for k, v in state.items()}
    torch.save(custom, tmp_path / "model.pt")
    (tmp_path / "open_clip_config.json").write_bytes(
        open(os.path.join(FIXTURES, "open_clip", "open_clip_config.json"), "rb").read()
    )
    convert.convert(tmp_path / "model.pt", tmp_path / "out", processor=False)
    ref = np.load(os.path.join(FIXTURES, "reference.npz"))
    logits = run_pt(tmp_path / "out", ref["open_clip_input_ids"], ref["open_clip_pixel_values"])
    np.testing.assert_allclose(logits, ref["open_clip_logits_per_image"], atol=1e-5, rtol=0)


# -- errors: one clear message naming the file and the tensor; nothing written ------------------------------
def _state():
    return {k: v.clone() for k, v in torch.load(SOURCES["openai_state_dict"][0], weights_only=True).items()}


def _assert_nothing_written(tmp_path, dst):
    assert not os.path.exists(dst)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wrong_shape_names_file_and_tensor(tmp_path):
    state = _state()
    state["transformer.resblocks.0.ln_2.weight"] = torch.ones(63, dtype=torch.float16)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(convert.ConversionError) as err:
        convert.convert(tmp_path / "bad.pt", tmp_path / "out")
    message = str(err.value)
    assert (
        "bad.pt" in message
        and "transformer.resblocks.0.ln_2.weight" in message
        and "(63,)" in message
        and "(64,)" in message
    )
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_unknown_tensor_is_an_error(tmp_path):
    state = _state()
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(convert.ConversionError, match=r"extra\.pt.*resblocks\.0\.ls_1\.gamma"):
        convert.convert(tmp_path / "extra.pt", tmp_path / "out")
    with pytest.raises(convert.ConversionError, match=r"ls_1\.gamma.*layer scale"):
        convert.convert(tmp_path / "extra.pt", tmp_path / "out", from_format="open_clip")
    _assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "content, match",
    [
        (
            {"encoder.layer.0.attention.self.query.weight": torch.zeros(4, 4)},
            r"not a CLIP checkpoint.*visual\.conv1\.weight",
        ),
        (
            {
                "visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1),
                "visual.attnpool.c_proj.weight": torch.zeros(4, 4),
            },
            r"ResNet image tower",
        ),
        ([1, 2, 3], r"holds a list"),
        ({"logit_scale": torch.zeros(()), "logit_bias": torch.zeros(())}, r"logit_bias.*SigLIP"),
    ],
)
def test_not_clip_sources(tmp_path, content, match):
    torch.save(content, tmp_path / "open_clip_x.bin" if "logit_bias" in str(content) else tmp_path / "x.bin")
    src = next(p for p in tmp_path.iterdir() if p.suffix == ".bin")
    with pytest.raises(convert.ConversionError, match=match) as err:
        convert.convert(src, tmp_path / "out")
    assert str(src) in str(err.value)
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_garbage_and_pickles_are_refused(tmp_path):
    (tmp_path / "noise.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(convert.ConversionError, match=r"noise\.pt.*weights_only"):
        convert.convert(tmp_path / "noise.pt", tmp_path / "out")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(convert.ConversionError, match=r"evil\.pt.*weights_only"):
        convert.convert(tmp_path / "evil.pt", tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")
