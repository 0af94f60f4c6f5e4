"""The same canonical checkpoint in clip.pt, clip.tf and clip.flax: every output and gradient agrees.

Each config's checkpoint is written once (one safetensors directory) and loaded by each backend's
from_pretrained; outputs and gradients are computed once per backend and compared for each pair.
float32: 1e-5 max abs on logits, embeddings, loss, every hidden state and attention map, and
every gradient. bfloat16: BF16_ATOL (0.02) on the unit embeddings and BF16_LOGIT_RTOL (1%) on the logits
(relative to the logit scale), both pairwise and against the float32 result.
"""

from __future__ import annotations

import numpy as np
import pytest

from equivalence_helpers import ATOL, BACKENDS, CASES, PAIRS, Case, make_config, max_abs_diff, write_checkpoint

# bfloat16 keeps 8 bits of mantissa (relative step 2^-8 = 0.0039). Measured on quick_gelu_p4 (2 layers
# per tower): unit embeddings within 0.008 across backends and of float32, logits within 0.0035 x the
# logit scale (scale * cosine). The bounds leave a 2.5-3x margin for other CPUs' bf16 kernels.
BF16_ATOL = 0.02
BF16_LOGIT_RTOL = 0.01


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    directory = write_checkpoint(make_config(request.param), str(tmp_path_factory.mktemp(request.param)))
    return Case(request.param, directory)


@pytest.fixture(scope="module")
def bf16_case(tmp_path_factory):
    name = "quick_gelu_p4"
    directory = write_checkpoint(make_config(name), str(tmp_path_factory.mktemp("bf16")))
    return Case(name, directory, dtype="bfloat16"), Case(name, directory)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_outputs_match(case, pair):
    a, b = (case.results(backend) for backend in pair)
    assert sorted(a) == sorted(b)
    expected_states = case.spec["text"]["num_hidden_layers"] + 1 + case.spec["vision"]["num_hidden_layers"] + 1
    assert sum(".hidden_states." in k for k in a) == expected_states
    assert (
        sum(".attentions." in k for k in a)
        == case.spec["text"]["num_hidden_layers"] + case.spec["vision"]["num_hidden_layers"]
    )
    diffs = {name: max_abs_diff(a[name], b[name]) for name in a}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= ATOL, f"{case.name} {pair}: {worst} differs by {diffs[worst]:.2e} (all: {diffs})"


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_gradients_match(case, pair):
    a, b = (case.gradients(backend) for backend in pair)
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    diffs = {name: max_abs_diff(a[name], b[name]) for name in a}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= ATOL, f"{case.name} {pair}: d loss / d {worst} differs by {diffs[worst]:.2e}"
    # not vacuous: the loss depends on every tensor
    assert all(np.abs(g).max() > 0 for g in a.values())


def test_outputs_are_not_trivial(case):
    """Guards against a comparison that passes because everything is zero or identical."""
    out = case.results("pt")
    assert np.ptp(out["logits_per_image"]) > 1e-3
    assert out["loss"] > 0
    if case.spec["interpolate"]:
        grid = case.spec["pixels"] // case.spec["vision"]["patch_size"]
        assert out["vision.last_hidden_state"].shape[1] == grid * grid + 1


def test_bfloat16(bf16_case):
    low, full = bf16_case
    reference = full.results("pt")
    scale = float(np.exp(np.asarray(low.models["pt"].logit_scale.float().item())))
    results = {backend: low.results(backend) for backend in BACKENDS}
    for backend, out in results.items():
        assert max_abs_diff(out["text_embeds"], reference["text_embeds"]) <= BF16_ATOL, backend
        assert max_abs_diff(out["image_embeds"], reference["image_embeds"]) <= BF16_ATOL, backend
        assert max_abs_diff(out["logits_per_image"], reference["logits_per_image"]) <= BF16_LOGIT_RTOL * scale, backend
    for a, b in PAIRS:
        for name in ("text_embeds", "image_embeds"):
            assert max_abs_diff(results[a][name], results[b][name]) <= BF16_ATOL, (a, b, name)
        assert (
            max_abs_diff(results[a]["logits_per_image"], results[b]["logits_per_image"]) <= BF16_LOGIT_RTOL * scale
        ), (a, b)
    # and bfloat16 really ran: not bit-identical to float32
    assert max_abs_diff(results["pt"]["text_embeds"], reference["text_embeds"]) > 0
