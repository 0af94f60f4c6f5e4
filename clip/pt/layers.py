"""The transformer blocks both CLIP towers share: attention, MLP, pre-LN encoder layer, encoder.

Also the pooled-token shortcut of the last layer (`output_at`) and the in-place rules of CPU
inference. The three backends share the blocks' names and argument order: (x, bias, is_causal,
output_attentions, ...) with what only one framework needs last (here `inplace`). Towers in
clip.pt.towers, public models in clip.pt.modeling.

Shapes: B batch, L tokens, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip.common.outputs import BaseModelOutput
from clip.pt.kernels import Linear


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
}


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


def explicit_attention(q, k, v, bias, is_causal, scale, dropout):
    """softmax(q k^T * scale + bias) v, also returning the weights: (B,H,L,d) -> (B,H,L,d), (B,H,L,L)."""
    weights = torch.matmul(q, k.transpose(-1, -2)) * scale
    if is_causal:
        bias = causal_bias(q.shape[-2], weights.dtype, weights.device)
    if bias is not None:
        weights = weights + bias
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, v), weights


def causal_bias(length, dtype, device):
    # additive: the dtype's minimum above the diagonal (not -inf, so rows stay finite), as transformers
    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)


class CLIPAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config  # read at each call: config._attn_implementation switches the kernel after loading
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.k_proj = Linear(width, width)
        self.v_proj = Linear(width, width)
        self.q_proj = Linear(width, width)
        self.out_proj = Linear(width, width)

    def forward(self, x, bias=None, is_causal=False, output_attentions=False):
        B, L, D = x.shape
        # BLD -> BLHd -> BHLd (views: SDPA takes the strides as they are)
        q = self.q_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if output_attentions or self.eager:
            out, weights = explicit_attention(q, k, v, bias, is_causal, self.scale, dropout)
            weights = weights if output_attentions else None
        else:
            out = F.scaled_dot_product_attention(q, k, v, bias, dropout, is_causal=is_causal, scale=self.scale)
            weights = None
        out = out.transpose(1, 2).reshape(B, L, D)  # BHLd -> BLHd -> BLD
        return self.out_proj(out), weights

    def attend_one(self, x, query, bias=None):
        """Attention output for one query per sequence: x (B,L,D), query (B,D) -> (B,D)."""
        B, L, D = x.shape
        q = self.q_proj(query).view(B, 1, self.num_heads, self.head_dim).transpose(1, 2)  # B,H,1,d
        k = self.k_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if self.eager:
            out, _ = explicit_attention(q, k, v, bias, False, self.scale, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v, bias, dropout, scale=self.scale)  # B,H,1,d
        return self.out_proj(out.reshape(B, D))

    @property
    def eager(self) -> bool:
        """transformers' attn_implementation="eager": the explicit softmax instead of the fused kernel."""
        return getattr(self.config, "_attn_implementation", None) == "eager"


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

    def forward(self, x, bias=None, is_causal=False, output_attentions=False, inplace=None):
        if inplace is None:  # callers running many layers ask once for all of them
            inplace = can_work_in_place(self)
        attn, weights = self.self_attn(self.layer_norm1(x), bias, is_causal, output_attentions)
        x = residual(x, attn, inplace)
        x = residual(x, self.mlp(self.layer_norm2(x), inplace), inplace)
        return x, weights

    def output_at(self, x, index, bias=None, inplace=None):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        if inplace is None:
            inplace = can_work_in_place(self)
        h = self.layer_norm1(x)
        rows = torch.arange(x.shape[0], device=x.device)
        y = residual(x[rows, index], self.self_attn.attend_one(h, h[rows, index], bias), inplace)  # BD
        return residual(y, self.mlp(self.layer_norm2(y), inplace), inplace)


class CLIPEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, x, bias=None, is_causal=False, output_attentions=False, output_hidden_states=False):
        states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        inplace = can_work_in_place(self)
        for layer in self.layers:
            x, weights = self._run(layer, x, bias, is_causal, output_attentions, inplace)
            if output_hidden_states:
                states += (x,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=states, attentions=attentions)

    def output_at(self, x, index, bias=None, is_causal=False, row_bias=None):
        """Only the last layer's output at `index` (B,), for callers that need nothing else;
        `row_bias` (B,1,1,L) is `bias`'s row of each pooled query."""
        inplace = can_work_in_place(self)
        for layer in self.layers[:-1]:
            x, _ = self._run(layer, x, bias, is_causal, False, inplace)
        return self.layers[-1].output_at(x, index, row_bias, inplace)

    def _run(self, layer, x, bias, is_causal, output_attentions, inplace):
        if self.gradient_checkpointing and self.training:
            # recompute the layer in backward instead of keeping its activations
            return checkpoint(layer, x, bias, is_causal, output_attentions, inplace, use_reentrant=False)
        return layer(x, bias, is_causal, output_attentions, inplace)
