"""CLIP in PyTorch: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

Module and parameter names follow transformers' CLIP, so its checkpoints load unchanged.
Argument checks, the pooling rule and the init scheme live in clip.common.checks; loading and
saving in clip.pt.loading; the contrastive loss in clip.pt.loss.

Shapes: B batch, L tokens, N patches, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip.common import checks
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
    ImageClassifierOutput,
)
from clip.pt.kernels import Linear, PatchConv, patch_tokens
from clip.pt.loss import classification_loss, clip_loss


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": F.relu}


def quick_gelu_(x):
    return x.mul_(torch.sigmoid_(x * 1.702))


# In-place forms for inference, where the input is a fresh activation nobody else reads: on CPU
# every new multi-MB buffer costs page faults, about as much as the arithmetic on it.
INPLACE_ACTIVATIONS = {"quick_gelu": quick_gelu_, "relu": torch.relu_}


def can_work_in_place(module) -> bool:
    """Whether intermediate results inside `module` may be overwritten: not when autograd needs
    them, nor when a forward hook may have kept a reference to one."""
    if torch.is_grad_enabled() or nn.modules.module._global_forward_hooks:
        return False
    return not any(m._forward_hooks for m in module.modules())


def residual(x, update, inplace):
    """x + update; with `inplace`, written into the fresh `update` (same values, no new buffer)."""
    return update.add_(x) if inplace else x + update


def explicit_attention(q, k, v, mask, is_causal, scale, dropout):
    """softmax(q k^T * scale + mask) v, also returning the weights: (B,H,L,d) -> (B,H,L,d), (B,H,L,L)."""
    weights = torch.matmul(q, k.transpose(-1, -2)) * scale
    if is_causal:
        mask = causal_mask(q.shape[-2], weights.dtype, weights.device)
    if mask is not None:
        weights = weights + mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, v), weights


def causal_mask(length, dtype, device):
    # additive: the dtype's minimum above the diagonal (not -inf, so rows stay finite), as transformers
    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)


class CLIPAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.k_proj = Linear(width, width)
        self.v_proj = Linear(width, width)
        self.q_proj = Linear(width, width)
        self.out_proj = Linear(width, width)

    def forward(self, x, mask=None, is_causal=False, output_attentions=False):
        B, L, D = x.shape
        # BLD -> BLHd -> BHLd (views: SDPA takes the strides as they are)
        q = self.q_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            out, weights = explicit_attention(q, k, v, mask, is_causal, self.scale, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal=is_causal, scale=self.scale)
            weights = None
        out = out.transpose(1, 2).reshape(B, L, D)  # BHLd -> BLHd -> BLD
        return self.out_proj(out), weights

    def forward_query(self, x, query, mask=None):
        """Attention output for one query per sequence: x (B,L,D), query (B,D) -> (B,D)."""
        B, L, D = x.shape
        q = self.q_proj(query).view(B, 1, self.num_heads, self.head_dim).transpose(1, 2)  # B,H,1,d
        k = self.k_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, mask, dropout, scale=self.scale)  # B,H,1,d
        return self.out_proj(out.reshape(B, D))


class CLIPMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        self.activation_inplace = INPLACE_ACTIVATIONS.get(config.hidden_act, self.activation_fn)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x, inplace=None):
        if inplace is None:
            inplace = can_work_in_place(self)
        activation = self.activation_inplace if inplace else self.activation_fn
        return self.fc2(activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, mask=None, is_causal=False, output_attentions=False, inplace=None):
        if inplace is None:  # callers running many layers ask once for all of them
            inplace = can_work_in_place(self)
        attn, weights = self.self_attn(self.layer_norm1(x), mask, is_causal, output_attentions)
        x = residual(x, attn, inplace)
        x = residual(x, self.mlp(self.layer_norm2(x), inplace), inplace)
        return x, weights

    def forward_at(self, x, index, mask=None, inplace=None):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        if inplace is None:
            inplace = can_work_in_place(self)
        h = self.layer_norm1(x)
        rows = torch.arange(x.shape[0], device=x.device)
        y = residual(x[rows, index], self.self_attn.forward_query(h, h[rows, index], mask), inplace)  # BD
        return residual(y, self.mlp(self.layer_norm2(y), inplace), inplace)


class CLIPEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, x, mask=None, is_causal=False, output_attentions=False, output_hidden_states=False):
        states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        inplace = can_work_in_place(self)
        for layer in self.layers:
            x, weights = self._run(layer, x, mask, is_causal, output_attentions, inplace)
            if output_hidden_states:
                states += (x,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=states, attentions=attentions)

    def forward_pooled(self, x, index, mask=None, is_causal=False, row_mask=None):
        """Only the last layer's output at `index` (B,), for callers that need nothing else."""
        inplace = can_work_in_place(self)
        for layer in self.layers[:-1]:
            x, _ = self._run(layer, x, mask, is_causal, False, inplace)
        return self.layers[-1].forward_at(x, index, row_mask, inplace)

    def _run(self, layer, x, mask, is_causal, output_attentions, inplace):
        if self.gradient_checkpointing and self.training:
            # recompute the layer in backward instead of keeping its activations
            return checkpoint(layer, x, mask, is_causal, output_attentions, inplace, use_reentrant=False)
        return layer(x, mask, is_causal, output_attentions, inplace)


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
        self.patch_embedding = PatchConv(config.num_channels, config.hidden_size, config.patch_size, config.patch_size, bias=False)
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
        grid = F.interpolate(grid.float(), size=(height // self.patch_size, width // self.patch_size), mode="bicubic", align_corners=False)
        grid = grid.to(weight.dtype).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])  # 1,D,h,w -> (hw),D
        return torch.cat([weight[:1], grid])


def _tracing() -> bool:
    """Under jit tracing, export or torch.compile, shapes must not depend on values."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return torch.jit.is_tracing() or compiling()


def text_attention_mask(attention_mask, dtype):
    """(mask, is_causal) for the text encoder: the causal kernel alone when nothing is padded."""
    if attention_mask is None or bool(attention_mask.all()):
        return None, True
    length = attention_mask.shape[1]
    padding = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    padding = padding.masked_fill(attention_mask == 0, torch.finfo(dtype).min)
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal_mask(length, dtype, attention_mask.device), False


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=False, output_hidden_states=False, pooled_only=False):
        if input_ids is None:
            raise ValueError("input_ids are required (integer token ids of shape (batch_size, sequence_length))")
        checks.check_input_ids(input_ids.shape, input_ids.dtype, self.config)
        if attention_mask is not None:
            checks.check_attention_mask(attention_mask.shape, input_ids.shape)
        if position_ids is not None:
            checks.check_position_ids(position_ids.shape, position_ids.dtype, input_ids.shape, self.config)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            return BaseModelOutputWithPooling(None, self.pooled_only(input_ids, attention_mask, position_ids, index))
        x = self.embeddings(input_ids, position_ids)
        mask, is_causal = text_attention_mask(attention_mask, x.dtype)
        encoded = self.encoder(x, mask, is_causal, output_attentions, output_hidden_states)
        last = self.final_layer_norm(encoded.last_hidden_state)
        rows = torch.arange(x.shape[0], device=x.device)
        return BaseModelOutputWithPooling(last, last[rows, index.to(x.device)], encoded.hidden_states, encoded.attentions)

    def pooled_only(self, input_ids, attention_mask, position_ids, index):
        """The pooled output alone, (B,D).

        Attention is causal, so no token after the last pooled one can change it: the batch runs
        only up to there (texts padded to 77 tokens, the longest 12 long, run 12: ~6x less work).
        """
        keep = int(index.max()) + 1 if index.numel() and not _tracing() else input_ids.shape[1]
        if keep < input_ids.shape[1]:
            input_ids = input_ids[:, :keep]
            attention_mask = None if attention_mask is None else attention_mask[:, :keep]
            position_ids = None if position_ids is None else position_ids[..., :keep]
        x = self.embeddings(input_ids, position_ids)
        mask, is_causal = text_attention_mask(attention_mask, x.dtype)
        index = index.to(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        # the mask rows of the pooled queries: B,1,1,L
        full = mask if mask is not None else causal_mask(x.shape[1], x.dtype, x.device).expand(x.shape[0], 1, -1, -1)
        row_mask = full[rows, :, index].unsqueeze(2)
        return self.final_layer_norm(self.encoder.forward_pooled(x, index, mask, is_causal, row_mask))

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

    def forward(self, pixel_values=None, output_attentions=False, output_hidden_states=False, interpolate_pos_encoding=False, pooled_only=False):
        if pixel_values is None:
            raise ValueError("pixel_values are required (float images of shape (batch_size, channels, height, width))")
        checks.check_pixel_values(pixel_values.shape, self.config, interpolate_pos_encoding, pixel_values.dtype)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # the class token
            return BaseModelOutputWithPooling(None, self.post_layernorm(self.encoder.forward_pooled(x, index)))
        encoded = self.encoder(x, None, False, output_attentions, output_hidden_states)
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = x.float()
    return (x32 / x32.pow(2).sum(dim=-1, keepdim=True).sqrt()).to(x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """logit_scale.exp() * cosine similarity, (T,E) x (I,E) -> (T,I), finite in float16."""
    cosine = torch.matmul(text_embeds, image_embeds.t())  # unit vectors: |cosine| <= 1 in any dtype
    if cosine.dtype != torch.float16:
        return cosine * logit_scale.exp().to(cosine.dtype)
    # exp(logit_scale) passes float16's 65504 for logit_scale > 11.09: scale in float32, then saturate
    logits = cosine.float() * logit_scale.float().exp()
    return logits.clamp(-65504.0, 65504.0).to(torch.float16)


class CLIPPreTrainedModel(nn.Module):
    """Config handling, initialization, gradient checkpointing, from_pretrained/save_pretrained."""

    config_class = CLIPConfig
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def init_weights(self, names=None):
        """transformers' CLIP initialization (clip.common.checks.init_spec), for all or some parameters."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name in params if names is None else names:
                spec = checks.init_spec(name, self.config)
                p = params[name]
                if spec[0] == "normal":
                    p.normal_(0.0, spec[1])
                elif spec[0] == "zeros":
                    p.zero_()
                elif spec[0] == "ones":
                    p.fill_(1.0)
                else:
                    p.fill_(spec[1])

    def _output_flags(self, output_attentions, output_hidden_states, return_dict):
        pick = lambda value, key, default: value if value is not None else getattr(self.config, key, default)  # noqa: E731
        return pick(output_attentions, "output_attentions", False), pick(output_hidden_states, "output_hidden_states", False), pick(return_dict, "return_dict", True)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, CLIPEncoder))

    def _set_gradient_checkpointing(self, enabled):
        for module in self.modules():
            if isinstance(module, CLIPEncoder):
                module.gradient_checkpointing = enabled

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.pt import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, safe_serialization=True, **kwargs):
        from clip.pt import loading

        return loading.save_pretrained(self, save_directory, safe_serialization=safe_serialization, **kwargs)


def _finish(output, return_dict):
    return output if return_dict else output.to_tuple()


class CLIPTextModel(CLIPPreTrainedModel):
    config_class = CLIPTextConfig

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        self.text_model = CLIPTextTransformer(config)
        self.init_weights()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return _finish(self.text_model(input_ids, attention_mask, position_ids, attn, hidden), return_dict)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPTextConfig

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        self.text_model = CLIPTextTransformer(config)
        self.text_projection = Linear(config.hidden_size, config.projection_dim, bias=False)
        self.init_weights()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.text_model(input_ids, attention_mask, position_ids, attn, hidden)
        embeds = self.text_projection(out.pooler_output)
        return _finish(CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict)


class CLIPVisionModel(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionTransformer(config)
        self.init_weights()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return _finish(self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding), return_dict)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionTransformer(config)
        self.visual_projection = Linear(config.hidden_size, config.projection_dim, bias=False)
        self.init_weights()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        embeds = self.visual_projection(out.pooler_output)
        return _finish(CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict)


class CLIPModel(CLIPPreTrainedModel):
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.text_model = CLIPTextTransformer(config.text_config)
        self.vision_model = CLIPVisionTransformer(config.vision_config)
        self.visual_projection = Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.init_weights()

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(self.text_model(input_ids, attention_mask, position_ids, pooled_only=True).pooler_output)

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pooled = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True).pooler_output
        return self.visual_projection(pooled)

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        if return_loss and input_ids is not None and pixel_values is not None and input_ids.ndim == 2:
            checks.check_batch_sizes(input_ids.shape[0], pixel_values.shape[0])
        vision = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        text = self.text_model(input_ids, attention_mask, position_ids, attn, hidden)
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale)  # T,I
        loss = clip_loss(logits_per_text) if return_loss else None
        output = CLIPOutput(loss, logits_per_text.t(), logits_per_text, text_embeds, image_embeds, text, vision)
        return _finish(output, return_dict)


class CLIPForImageClassification(CLIPPreTrainedModel):
    config_class = CLIPConfig
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = CLIPVisionTransformer(config.vision_config)
        width = config.vision_config.hidden_size
        self.classifier = Linear(width, self.num_labels) if self.num_labels > 0 else nn.Identity()
        self.init_weights()

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None, return_dict=None, interpolate_pos_encoding=False):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        logits = self.classifier(out.last_hidden_state[:, 1:].mean(dim=1))  # mean of the patch tokens
        loss = None if labels is None else classification_loss(logits, labels, self.config, self.num_labels)
        return _finish(ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions), return_dict)
