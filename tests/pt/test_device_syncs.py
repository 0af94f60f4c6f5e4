"""The towers' inference paths never read tensor values on an accelerator: on a GPU each read waits
for the device (and breaks CUDA-graph capture). A model on PyTorch's "meta" device has no values
at all, so any read raises there: these forwards complete only if nothing is read."""

import pytest
from pt_helpers import CONFIGS, make_configs, ours, torch


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forwards_on_a_device_without_values(name):
    config, _ = make_configs(name, "CLIPModel")
    model = ours.CLIPModel(config).eval().to("meta")
    tc, vc = config.text_config, config.vision_config
    ids = torch.zeros(3, tc.max_position_embeddings, dtype=torch.long, device="meta")
    mask = torch.ones_like(ids)
    pixels = torch.zeros(2, 3, vc.image_size, vc.image_size, device="meta")
    with torch.inference_mode():
        assert model.get_text_features(input_ids=ids, attention_mask=mask).shape == (3, config.projection_dim)
        assert model.get_text_features(input_ids=ids).shape == (3, config.projection_dim)
        assert model.text_model(ids, mask).pooler_output.shape == (3, tc.hidden_size)
        assert model.get_image_features(pixel_values=pixels).shape == (2, config.projection_dim)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        assert out.logits_per_image.shape == (2, 3)


def test_values_on_the_cpu_are_unchanged_by_the_padding_shortcut():
    """On the CPU the shortcuts stay (mask dropped when all ones, texts cut after the pooled token):
    the same features as the full computation through the explicit-attention path."""
    config, _ = make_configs("quick_gelu", "CLIPModel")
    torch.manual_seed(0)
    model = ours.CLIPModel(config).eval()
    ids = torch.randint(1, 90, (3, 16))
    ids[:, 9] = config.text_config.eos_token_id  # pooled at 9: the shortcut runs 10 of 16 tokens
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        fast = model.get_text_features(input_ids=ids, attention_mask=mask)
    with torch.no_grad():  # output_attentions: every token through the explicit softmax, no shortcut
        full = model.text_model(ids, mask, output_attentions=True).pooler_output
        reference = model.text_projection(full)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
