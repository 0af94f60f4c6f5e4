"""The two CLIP towers: embeddings, the causal text transformer and the vision transformer (ViT).

Input checks and the pooling rule come from clip.common.checks; the blocks from clip.pt.layers.

Shapes: B batch, L tokens, N patches, D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clip.common import checks
from clip.common.config import CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import BaseModelOutputWithPooling
from clip.pt.kernels import PatchConv, patch_tokens, tracing
from clip.pt.layers import CLIPEncoder, causal_bias


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids, position_ids=None):
        # no position_ids buffer: the first L rows are the default positions, without a gather
        if position_ids is None:
            positions = self.position_embedding.weight[: input_ids.shape[1]]  # LD
        else:
            positions = self.position_embedding(position_ids)  # BLD or 1LD
        return self.token_embedding(input_ids) + positions


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.image_size, self.patch_size = config.image_size, config.patch_size
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.patch_embedding = PatchConv(
            config.num_channels, config.hidden_size, config.patch_size, config.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(config.num_patches + 1, config.hidden_size)

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        B, _, height, width = pixel_values.shape
        patches = patch_tokens(pixel_values.to(self.patch_embedding.weight.dtype), self.patch_embedding)  # BND
        x = torch.cat([self.class_embedding.expand(B, 1, -1), patches], dim=1)  # B,1+N,D
        if interpolate_pos_encoding:
            return x + self.resized_positions(x.shape[1] - 1, height, width)
        return x + self.position_embedding.weight

    def resized_positions(self, num_patches, height, width):
        """Position embeddings resampled (bicubic) to the patch grid of a height x width image."""
        weight = self.position_embedding.weight  # (1+N0),D
        if num_patches == weight.shape[0] - 1 and height == width:
            return weight
        side = math.isqrt(weight.shape[0] - 1)
        grid = weight[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # 1,s,s,D -> 1,D,s,s
        # resample in float32: bicubic weights in half precision cost accuracy (and CPU support)
        grid = F.interpolate(
            grid.float(),
            size=(height // self.patch_size, width // self.patch_size),
            mode="bicubic",
            align_corners=False,
        )
        grid = grid.to(weight.dtype).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])  # 1,D,h,w -> (hw),D
        return torch.cat([weight[:1], grid])


def text_attention_bias(attention_mask, dtype):
    """(bias, is_causal) for the text encoder: the causal kernel alone when nothing is padded, else
    an additive bias (B,1,L,L) of padding and causal masking.

    Traced (jit.trace, export, compile), always the bias: a branch on its values would be baked in.
    On an accelerator also always the bias: reading its values would wait for the device (and
    break CUDA-graph capture); an all-ones mask gives the causal kernel's values. Callers that know
    on the host that nothing is padded pass None (clip.tasks.backends does).
    """
    if attention_mask is None or (reads_values_freely(attention_mask) and bool(attention_mask.all())):
        return None, True
    length = attention_mask.shape[1]
    padding = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    padding = padding.masked_fill(attention_mask == 0, torch.finfo(dtype).min)
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal_bias(length, dtype, attention_mask.device), False


def reads_values_freely(tensor) -> bool:
    """Whether branching on `tensor`'s values is cheap and allowed: on the CPU and not traced."""
    return tensor.device.type == "cpu" and not tracing()


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        pooled_only=False,
    ):
        self.check_inputs(input_ids, attention_mask, position_ids)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            return BaseModelOutputWithPooling(None, self.pooled_only(input_ids, attention_mask, position_ids, index))
        x = self.embeddings(input_ids, position_ids)
        bias, is_causal = text_attention_bias(attention_mask, x.dtype)
        encoded = self.encoder(x, bias, is_causal, output_attentions, output_hidden_states)
        last = self.final_layer_norm(encoded.last_hidden_state)
        rows = torch.arange(x.shape[0], device=x.device)
        return BaseModelOutputWithPooling(
            last, last[rows, index.to(x.device)], encoded.hidden_states, encoded.attentions
        )

    def pooled_only(self, input_ids, attention_mask, position_ids, index):
        """The pooled output alone, (B,D).

        Attention is causal, so no token after the last pooled one can change it: the batch runs
        only up to there (texts padded to 77 tokens, the longest 12 long, run 12: ~6x less work).
        Not on an accelerator, where reading the index would wait for the device in every call.
        """
        keep = int(index.max()) + 1 if index.numel() and reads_values_freely(index) else input_ids.shape[1]
        if keep < input_ids.shape[1]:
            input_ids = input_ids[:, :keep]
            attention_mask = None if attention_mask is None else attention_mask[:, :keep]
            position_ids = None if position_ids is None else position_ids[..., :keep]
        x = self.embeddings(input_ids, position_ids)
        bias, is_causal = text_attention_bias(attention_mask, x.dtype)
        index = index.to(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        # the bias rows of the pooled queries: B,1,1,L
        full = bias if bias is not None else causal_bias(x.shape[1], x.dtype, x.device).expand(x.shape[0], 1, -1, -1)
        row_bias = full[rows, :, index].unsqueeze(2)
        return self.final_layer_norm(self.encoder.output_at(x, index, bias, is_causal, row_bias))

    def check_inputs(self, input_ids, attention_mask=None, position_ids=None):
        """ValueError naming the input unless the shapes and dtypes are what the tower takes."""
        checks.check_text_inputs(self.config, input_ids, attention_mask, position_ids)

    def pooled_positions(self, input_ids):
        # int32 as transformers (ONNX argmax); argmax returns the first maximum
        if checks.text_pooling_rule(self.config) == "argmax":
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).to(torch.int).argmax(dim=-1)


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic: checkpoint name
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        pixel_values=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        pooled_only=False,
    ):
        self.check_inputs(pixel_values, interpolate_pos_encoding)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # the class token
            return BaseModelOutputWithPooling(None, self.post_layernorm(self.encoder.output_at(x, index)))
        encoded = self.encoder(x, None, False, output_attentions, output_hidden_states)
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, pixel_values, interpolate_pos_encoding=False):
        """ValueError naming the input unless the shape and dtype are what the tower takes."""
        checks.check_image_inputs(self.config, pixel_values, interpolate_pos_encoding)
