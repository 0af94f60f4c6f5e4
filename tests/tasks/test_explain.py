"""clip.tasks.explain: Chefer et al.'s relevance by hand on a one-layer model, the three backends
against each other, and the embedded model looking where the shape is."""

import numpy as np
import pytest

from clip.tasks.backends import TaskError
from clip.tasks.explain import explain, relevance

TEXTS = ["a red circle", "a small blue square on grey"]  # different lengths: the shorter one is padded


def _save_model(path, layers, seed):
    """A tiny CLIP with fixed random weights (LayerNorm scales around 1), saved with a processor."""
    torch = pytest.importorskip("torch")
    from clip.common.config import CLIPConfig
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast
    from clip.pt import CLIPModel

    tower = dict(
        hidden_size=8, intermediate_size=12, num_hidden_layers=layers, num_attention_heads=2, hidden_act="quick_gelu"
    )
    config = CLIPConfig(
        text_config=dict(tower, max_position_embeddings=16),
        vision_config=dict(tower, image_size=16, patch_size=8),
        projection_dim=4,
        logit_scale_init_value=float(np.log(10.0)),
    )
    model = CLIPModel(config)
    rng = np.random.default_rng(seed)
    state = {}
    for name, value in model.state_dict().items():
        if name == "logit_scale":
            state[name] = value
        elif "norm" in name and name.endswith("weight"):
            state[name] = torch.from_numpy(1 + 0.3 * rng.standard_normal(value.shape).astype(np.float32))
        else:
            state[name] = torch.from_numpy(0.5 * rng.standard_normal(value.shape).astype(np.float32))
    model.load_state_dict(state)
    model.save_pretrained(path)
    CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}), CLIPTokenizerFast()
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_layer_model(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("one_layer"), layers=1, seed=7)


@pytest.fixture(scope="module")
def two_layer_model(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("two_layers"), layers=2, seed=11)


@pytest.fixture(scope="module")
def photo():
    from PIL import Image

    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))


# -- the reference: numpy, forward and backward written out for one pre-LN layer -------------------
def _layer_norm(x, weight, bias, eps=1e-5):
    sigma = np.sqrt(x.var(-1, keepdims=True) + eps)
    normed = (x - x.mean(-1, keepdims=True)) / sigma
    return normed * weight + bias, (normed, sigma, weight)


def _layer_norm_backward(grad, cache):
    normed, sigma, weight = cache
    g = grad * weight
    return (g - g.mean() - normed * (g * normed).mean()) / sigma


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _one_layer(w, prefix, x, row, heads):
    """x (L, D) into the layer; returns (A (heads, L, L), the backward from the output at `row`)."""

    def p(name):
        return w[f"{prefix}.encoder.layers.0.{name}"]

    length, width = x.shape
    d = width // heads
    h, _ = _layer_norm(x, p("layer_norm1.weight"), p("layer_norm1.bias"))
    q, k, v = (
        (h @ p(f"self_attn.{n}_proj.weight").T + p(f"self_attn.{n}_proj.bias"))
        .reshape(length, heads, d)
        .transpose(1, 0, 2)
        for n in "qkv"
    )
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)
    scores = scores + np.triu(np.full((length, length), -np.inf), 1) if prefix == "text_model" else scores
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # heads, L, L
    attended = (weights @ v).transpose(1, 0, 2).reshape(length, width)
    x1 = x + attended @ p("self_attn.out_proj.weight").T + p("self_attn.out_proj.bias")
    h2, ln2 = _layer_norm(x1[row], p("layer_norm2.weight"), p("layer_norm2.bias"))
    m = h2 @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")
    x2 = x1[row] + (m * _sigmoid(1.702 * m)) @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")

    def backward(grad_x2):
        """dS/dA (heads, L, L) from dS/d(output at row): only row `row` of A reaches it."""
        s = _sigmoid(1.702 * m)
        grad_m = (grad_x2 @ p("mlp.fc2.weight")) * (s + 1.702 * m * s * (1 - s))  # quick_gelu'
        grad_x1 = grad_x2 + _layer_norm_backward(grad_m @ p("mlp.fc1.weight"), ln2)
        grad_attended = (grad_x1 @ p("self_attn.out_proj.weight")).reshape(heads, d)
        grads = np.zeros_like(weights)
        grads[:, row, :] = np.einsum("hd,hjd->hj", grad_attended, v)  # o[h,row] = sum_j A[h,row,j] v[h,j]
        return grads

    return weights, x2, backward


def _reference(w, pixels, ids, heads=2):
    """(similarity, image relevance (N,), token relevance (end+1,)) for one image and one text."""
    # vision: patches as the conv computes them, the class token, positions, pre-LN
    conv = w["vision_model.embeddings.patch_embedding.weight"]  # D,C,p,p
    size = conv.shape[-1]
    patches = [
        np.einsum("dcab,cab->d", conv, pixels[:, i : i + size, j : j + size])
        for i in range(0, pixels.shape[1], size)
        for j in range(0, pixels.shape[2], size)
    ]
    x = (
        np.vstack([w["vision_model.embeddings.class_embedding"][None], patches])
        + w["vision_model.embeddings.position_embedding.weight"]
    )
    x, _ = _layer_norm(x, w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"])
    image_attention, image_out, image_backward = _one_layer(w, "vision_model", x, 0, heads)
    pooled, post = _layer_norm(
        image_out, w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"]
    )
    image_embed = w["visual_projection.weight"] @ pooled
    # text: up to the end token (causal: later tokens cannot reach its row)
    end = int(np.argmax(ids == 49407))
    t = (
        w["text_model.embeddings.token_embedding.weight"][ids[: end + 1]]
        + w["text_model.embeddings.position_embedding.weight"][: end + 1]
    )
    text_attention, text_out, text_backward = _one_layer(w, "text_model", t, end, heads)
    pooled_text, final = _layer_norm(
        text_out, w["text_model.final_layer_norm.weight"], w["text_model.final_layer_norm.bias"]
    )
    text_embed = w["text_projection.weight"] @ pooled_text
    # S = s <e/|e|, t/|t|>; dS/de = s (t^ - (e^.t^) e^) / |e|, and the same with e and t swapped
    scale = np.exp(w["logit_scale"])
    e_unit, t_unit = image_embed / np.linalg.norm(image_embed), text_embed / np.linalg.norm(text_embed)
    similarity = scale * e_unit @ t_unit
    grad_e = scale * (t_unit - (e_unit @ t_unit) * e_unit) / np.linalg.norm(image_embed)
    grad_t = scale * (e_unit - (e_unit @ t_unit) * t_unit) / np.linalg.norm(text_embed)
    image_grads = image_backward(_layer_norm_backward(grad_e @ w["visual_projection.weight"], post))
    text_grads = text_backward(_layer_norm_backward(grad_t @ w["text_projection.weight"], final))
    # one layer: R = I + mean_h max(dS/dA * A, 0)
    image_rel = np.eye(len(x)) + np.clip(image_grads * image_attention, 0, None).mean(0)
    text_rel = np.eye(end + 1) + np.clip(text_grads * text_attention, 0, None).mean(0)
    return similarity, image_rel[0, 1:], text_rel[end]


def test_relevance_of_a_one_layer_model_by_hand(one_layer_model, photo):
    from safetensors.numpy import load_file

    from clip.tasks import load_encoder

    encoder = load_encoder(one_layer_model, "pt")
    weights = {k: v.astype(np.float64) for k, v in load_file(str(one_layer_model / "model.safetensors")).items()}
    pixels = encoder.preprocess([photo])[0].astype(np.float64)
    maps = explain(encoder, photo, TEXTS)
    ids = encoder.tokenize(TEXTS)["input_ids"]
    for row, found in zip(ids, maps):
        similarity, image_rel, token_rel = _reference(weights, pixels, np.asarray(row))
        assert found.similarity == pytest.approx(similarity, rel=1e-5)
        assert found.patch_relevance.shape == (2, 2)  # 16 / 8 patches a side
        np.testing.assert_allclose(found.patch_relevance.ravel(), image_rel, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(found.token_relevance, token_rel, rtol=1e-4, atol=1e-6)
        assert found.tokens[0] == "<|startoftext|>" and found.tokens[-1] == "<|endoftext|>"
        assert len(found.tokens) == len(token_rel)
        assert np.count_nonzero(image_rel) and np.count_nonzero(token_rel[:-1])  # the check sees real gradients
        assert found.heatmap.shape == (16, 16) and found.heatmap.min() == 0 and found.heatmap.max() == pytest.approx(1)


def test_relevance_rule_on_a_two_layer_example_by_hand():
    # one head, L = 2; layer 1: (grad * A)^+ = [[0, .5], [0, 0]], layer 2: [[.2, 0], [.1, 0]]
    a1, g1 = np.array([[[[0.5, 0.5], [1.0, 0.0]]]]), np.array([[[[-1.0, 1.0], [0.0, 3.0]]]])
    a2, g2 = np.array([[[[0.4, 0.6], [0.1, 0.9]]]]), np.array([[[[0.5, -1.0], [1.0, 0.0]]]])
    r1 = np.eye(2) + np.array([[0, 0.5], [0, 0]])  # [[1, .5], [0, 1]]
    r2 = r1 + np.array([[0.2, 0], [0.1, 0]]) @ r1  # + [[.2, .1], [.1, .05]]
    np.testing.assert_allclose(relevance([a1, a2], [g1, g2])[0], [[1.2, 0.6], [0.1, 1.05]])
    np.testing.assert_allclose(r2, [[1.2, 0.6], [0.1, 1.05]])
    np.testing.assert_allclose(relevance([a1, a2], [g1, g2], start_layer=1)[0], [[1.2, 0], [0.1, 1]])


def test_three_backends_give_the_same_maps(two_layer_model, photo):
    pytest.importorskip("tensorflow")
    pytest.importorskip("clip.flax")
    from clip.tasks import load_encoder

    maps = {backend: explain(load_encoder(two_layer_model, backend), photo, TEXTS) for backend in ("pt", "tf", "flax")}
    for backend in ("tf", "flax"):
        for ours, theirs in zip(maps["pt"], maps[backend]):
            assert theirs.tokens == ours.tokens
            assert theirs.similarity == pytest.approx(ours.similarity, abs=1e-4)
            np.testing.assert_allclose(theirs.patch_relevance, ours.patch_relevance, atol=1e-4)
            np.testing.assert_allclose(theirs.token_relevance, ours.token_relevance, atol=1e-4)
            np.testing.assert_allclose(theirs.heatmap, ours.heatmap, atol=1e-4)
    assert np.abs(maps["pt"][0].patch_relevance - maps["pt"][1].patch_relevance).max() > 1e-3  # each text its own map


def _one_shape(colour, x, y):
    from clip.data.synthetic import COLOURS, render

    shape = {
        "colour": colour,
        "shape": "circle",
        "size": "large",
        "rgb": COLOURS[colour],
        "radius": 0.2,
        "x": x,
        "y": y,
        "angle": 0.0,
    }
    background = {"kind": "plain", "low": 120, "high": 150, "period": 4, "vertical": False, "noise_seed": 0}
    return render({"shapes": [shape], "background": background}, 48)


@pytest.mark.parametrize("x, y", [(0.25, 0.25), (0.7, 0.3)])
def test_the_embedded_model_looks_where_the_shape_is(encoder, x, y):
    # a red circle of radius 0.2 (of 48 px) centred at (x, y) on plain grey; the disk around it with
    # a margin of 0.08 covers a quarter of the image, and must hold most of the heat map
    (found,) = explain(encoder, _one_shape("red", x, y), ["a red circle"])
    rows, cols = np.mgrid[0:48, 0:48] + 0.5
    disk = (cols / 48 - x) ** 2 + (rows / 48 - y) ** 2 <= 0.28**2
    assert disk.mean() < 0.25
    assert found.heatmap[disk].sum() > 0.6 * found.heatmap.sum()
    assert disk[np.unravel_index(np.argmax(found.heatmap), disk.shape)]  # the peak lies on the shape
    assert dict(found.word_scores())["red"] > 0.5  # the colour word carries the match


def test_bad_arguments_are_clear(encoder, photo):
    with pytest.raises(TaskError, match="non-empty text"):
        explain(encoder, photo, [])
    with pytest.raises(TaskError, match="start_layer 9"):
        explain(encoder, photo, ["a"], start_layer=9)


def test_command_writes_the_panels_and_prints_the_maps(encoder, tmp_path):
    from PIL import Image

    from task_helpers import run_clip, run_json

    image = tmp_path / "red.png"
    _one_shape("red", 0.25, 0.25).save(image)
    out = tmp_path / "map.png"
    result = run_json("explain", image, "--text", "a red circle", "--text", "a blue square", "--out", out)
    with Image.open(out) as figure:
        assert figure.size == (600, 390)  # two panels of 3 x 3.9 inches at 100 dpi
    expected = explain(encoder, str(image), ["a red circle", "a blue square"])
    assert [m["text"] for m in result["explanations"]] == ["a red circle", "a blue square"]
    for got, want in zip(result["explanations"], expected):
        np.testing.assert_allclose(got["patch_relevance"], want.patch_relevance, atol=1e-5)
        assert [t["token"] for t in got["tokens"]] == want.tokens
        assert sum(w["share"] for w in got["word_scores"]) == pytest.approx(1, abs=1e-5)
    table = run_clip("explain", image, "--text", "a red circle", "--out", out).stdout
    assert "a red circle" in table and "red " in table and f"wrote {out}" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "a"], "nothing to do"),
        (["--text", "a", "--out", "map.jpg"], "name it .png"),
        (["--text", " ", "--json"], "--text is empty"),
    ],
)
def test_command_errors_are_one_line(tmp_path, args, message):
    from task_helpers import run_clip

    image = tmp_path / "red.png"
    _one_shape("red", 0.5, 0.5).save(image)
    proc = run_clip("explain", image, *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_command_on_an_unreadable_image_is_one_line(tmp_path):
    from task_helpers import run_clip

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    proc = run_clip("explain", bad, "--text", "a", "--json", check=False)
    assert proc.returncode == 2 and "broken.png" in proc.stderr and "Traceback" not in proc.stderr
