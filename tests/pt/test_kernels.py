"""The CPU inference kernels (clip.pt.kernels): same numbers as PyTorch's own ops and as
transformers, and a bfloat16 weight cache that never serves stale weights."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F

from clip.pt import kernels

from pt_helpers import CONFIGS, assert_close_outputs, make_inputs, make_pair

needs_onednn = pytest.mark.skipif(not kernels.ONEDNN, reason="this PyTorch build has no oneDNN linear")
needs_onednn_bf16 = pytest.mark.skipif(not kernels.ONEDNN_BF16, reason="no oneDNN bfloat16 on this CPU")


@needs_onednn
def test_inference_path_is_the_onednn_one_only_without_autograd():
    x, w = torch.randn(3, 512), torch.randn(512, 512)
    assert kernels.uses_onednn(x, w) is False  # autograd on: PyTorch's differentiable linear
    with torch.no_grad():
        assert kernels.uses_onednn(x, w)
        assert not kernels.uses_onednn(x[:, :8], w[:8, :8])  # small float32 weights: PyTorch's is faster
        assert kernels.uses_onednn(x[:, :8].bfloat16(), w[:8, :8].bfloat16()) == kernels.ONEDNN_BF16
        assert not kernels.uses_onednn(x.half(), w.half())  # no oneDNN float16 on CPU: PyTorch's
        assert not kernels.uses_onednn(x, w.double())


def test_autocast_is_honoured_in_inference():
    layer = kernels.Linear(512, 512)
    x = torch.randn(3, 512)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = layer(x), F.linear(x, layer.weight, layer.bias)
    assert got.dtype == expected.dtype == torch.bfloat16  # not a float32 oneDNN product autocast cannot see
    assert torch.equal(got, expected)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_any_input_rank_strided_weights_and_the_width_error(dtype):
    layer = kernels.Linear(512, 512).to(dtype)
    with torch.no_grad():
        layer.weight = torch.nn.Parameter(torch.randn(512, 1024).to(dtype)[:, ::2])  # a strided weight
        for shape in ((512,), (3, 512), (2, 3, 4, 512)):
            x = torch.randn(shape).to(dtype)
            got, want = layer(x), F.linear(x, layer.weight, layer.bias)
            assert got.shape == want.shape
            assert (got.float() - want.float()).abs().max() <= 1e-4 * want.float().abs().max()
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            layer(torch.randn(3, 500).to(dtype))


@needs_onednn
@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_features_match_transformers(name):
    model, ref = make_pair(name, "CLIPModel")
    inputs = make_inputs(name)
    with torch.inference_mode():
        for ours_call, ref_call in (
            (model.get_image_features, ref.get_image_features),
            (model.get_text_features, ref.get_text_features),
        ):
            keys = ("pixel_values",) if ours_call == model.get_image_features else ("input_ids", "attention_mask")
            args = {k: inputs[k] for k in keys}
            assert (ours_call(**args) - ref_call(**args)).abs().max() <= 1e-5
        assert_close_outputs(model(**inputs, output_hidden_states=True), ref(**inputs, output_hidden_states=True))


def onednn_width_pair(layers=2):
    """(ours, transformers') CLIPModel, same weights, at widths of 512: oneDNN's float32 path (the
    small test configs stay on PyTorch's)."""
    import transformers

    from clip.common.config import CLIPConfig
    import clip.pt as ours

    tower = {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": layers, "num_attention_heads": 8}
    config = CLIPConfig(
        text_config={**tower, "max_position_embeddings": 20},
        vision_config={**tower, "image_size": 64, "patch_size": 16},
        projection_dim=512,
    )
    torch.manual_seed(0)
    model = ours.CLIPModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ref = transformers.CLIPModel(transformers.CLIPConfig(**config.to_dict())).eval()
    ref.load_state_dict(model.state_dict(), strict=False)
    return model, ref


def text_batch(eos, ends, length=12, seed=0):
    """Token ids ending (then padded) at `ends`, and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (len(ends), length), generator=g)
    mask = torch.ones_like(ids)
    for row, end in enumerate(ends):
        ids[row, end - 1] = eos
        mask[row, end:] = 0
    return ids, mask


@needs_onednn
def test_inference_at_onednn_widths_matches_transformers():
    model, ref = onednn_width_pair()
    pixels = torch.randn(3, 3, 64, 64)
    ids, mask = text_batch(model.config.text_config.eos_token_id, [9, 12, 12])
    with torch.inference_mode():
        assert kernels.uses_onednn(pixels, model.visual_projection.weight)
        assert (
            model.get_image_features(pixel_values=pixels) - ref.get_image_features(pixel_values=pixels)
        ).abs().max() <= 1e-5
        assert (
            model.get_text_features(input_ids=ids, attention_mask=mask)
            - ref.get_text_features(input_ids=ids, attention_mask=mask)
        ).abs().max() <= 1e-5
        out, expected = (
            model(input_ids=ids, attention_mask=mask, pixel_values=pixels),
            ref(input_ids=ids, attention_mask=mask, pixel_values=pixels),
        )
        assert (out.logits_per_image - expected.logits_per_image).abs().max() <= 1e-5


class _ImageFeatures(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values)


class _TextFeatures(_ImageFeatures):
    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)


_FEATURES = {"image": _ImageFeatures, "text": _TextFeatures}


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("how", ["jit.trace", "export", "compile"])
def test_traced_exported_and_compiled_graphs_are_portable_and_general(tower, how):
    """Traced on one input, the graph must hold no oneDNN op (export, ONNX and dynamo cannot take
    it) and must not bake in the example's values: another batch (padded texts after an unpadded
    example) still gives transformers' answer."""
    model, ref = onednn_width_pair(layers=1)
    eos = model.config.text_config.eos_token_id
    if tower == "image":
        example, other = (torch.randn(2, 3, 64, 64),), (torch.randn(3, 3, 64, 64),)
    else:
        example, other = text_batch(eos, [12, 12], seed=1), text_batch(eos, [5, 12, 8], seed=2)
    module = _FEATURES[tower](model)
    with torch.no_grad():
        if how == "jit.trace":
            graph = torch.jit.trace(module, example)
            assert "mkldnn" not in str(graph.inlined_graph)
        elif how == "export":
            batch = torch.export.Dim("batch")
            exported = torch.export.export(module, example, dynamic_shapes=tuple({0: batch} for _ in example))
            assert not [n for n in exported.graph.nodes if "mkldnn" in str(n.target)]
            graph = exported.module()
        else:
            graph = torch.compile(module, dynamic=False)
            graph(*example)
        got = graph(*other)
        expected = _FEATURES[tower](ref)(*other)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("size", [(24, 24), (26, 30), (33, 17)])
def test_patch_matmul_equals_the_conv_including_remainders(size):
    # sizes that are not multiples of the patch: the conv drops the remainder, so must we
    conv = kernels.PatchConv(3, 16, 8, 8, bias=False)
    pixels = torch.randn(2, 3, *size)
    expected = F.conv2d(pixels, conv.weight, stride=8).flatten(2).transpose(1, 2)
    with torch.no_grad():
        got = kernels.patch_tokens(pixels, conv)
    assert got.shape == expected.shape == (2, (size[0] // 8) * (size[1] // 8), 16)
    assert (got - expected).abs().max() <= 1e-5
    assert torch.equal(kernels.patch_tokens(pixels, conv).detach(), expected.detach())  # autograd: the conv itself


def test_interpolated_positions_at_uneven_sizes_match_transformers():
    model, ref = make_pair("gelu", "CLIPVisionModelWithProjection")
    pixels = torch.randn(2, 3, 44, 52)
    with torch.inference_mode():
        ours_out = model(pixel_values=pixels, interpolate_pos_encoding=True)
        ref_out = ref(pixel_values=pixels, interpolate_pos_encoding=True)
    assert_close_outputs(ours_out, ref_out)


@needs_onednn_bf16
def test_bfloat16_packed_weight_follows_every_kind_of_weight_change():
    torch.manual_seed(0)
    layer = kernels.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16)

    def check(what):
        with torch.no_grad():
            got = layer(x)
            want = F.linear(x, layer.weight, layer.bias)
        assert (got.float() - want.float()).abs().max() <= 1e-2, f"stale weights after {what}"

    check("first call")
    assert "_onednn_packed" in layer.__dict__
    with torch.no_grad():
        layer.weight.mul_(2)  # in-place, version counter bumps
    check("in-place update")
    layer.weight.data.mul_(-0.5)  # .data bypasses the version counter; the value sample sees it
    check("in-place update through .data")
    layer.load_state_dict({"weight": torch.randn(48, 64), "bias": torch.randn(48)})
    check("load_state_dict")
    layer.float().to(torch.bfloat16)  # new storage, maybe at a recycled address
    check("dtype round trip")
    assert "_onednn_packed" in layer.__dict__
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer.float()(x.float()).square().sum().backward()
    opt.step()
    layer.to(torch.bfloat16)
    check("optimizer step")


@needs_onednn_bf16
def test_model_with_packed_weights_copies_and_pickles_without_the_pack():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.to(torch.bfloat16)
    inputs = make_inputs("quick_gelu")
    pixels = inputs["pixel_values"].to(torch.bfloat16)
    with torch.inference_mode():
        before = model.get_image_features(pixel_values=pixels)
    packed = [m for m in model.modules() if "_onednn_packed" in m.__dict__]
    assert packed, "bfloat16 inference packs the weights"
    clone = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer, pickle_module=pickle)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (clone, loaded):
        assert not any("_onednn_packed" in m.__dict__ for m in other.modules())
        with torch.inference_mode():
            assert torch.equal(other.get_image_features(pixel_values=pixels), before)
