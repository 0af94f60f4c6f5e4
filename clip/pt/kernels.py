"""CPU inference kernels under the model's layers: oneDNN matrix products and the patch matmul.

PyTorch's own CPU `linear` hands float32 to MKL and reorders a bfloat16 weight into oneDNN's
blocked layout on every call; at CLIP's shapes (tens of rows per weight at batch 1) both leave
a third of the machine idle. Measured on a 2-core AVX-512 machine, ViT-B/32 weights streamed
from memory: float32 at 50 rows 120 -> 160 GFLOP/s through oneDNN's matmul, bfloat16 259 -> 355
GFLOP/s with the weight reordered once and kept (bench/bench_pt.py has the whole-model rows);
below 512x512 float32 weights PyTorch's own call is the faster one and stays.

Only inference takes these paths (autograd off, CPU, float32/bfloat16): training keeps PyTorch's
differentiable kernels. The reordered bfloat16 weight is a cache, and a cache of weights must
never serve stale values: it is rebuilt when the parameter's storage, version counter or a
sample of its values changes (the sample catches in-place edits through `.data`, which bypass
the version counter), and never pickled or copied with the module.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_available() -> bool:
    if os.environ.get("CLIP_PT_ONEDNN", "1") == "0":  # an escape hatch for bisecting numerics
        return False
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()
ONEDNN_BF16 = ONEDNN and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
_SAMPLE_POINTS = 16


# oneDNN's float32 call costs ~15 us more than PyTorch's on small weights: it wins from 512x512 up
_ONEDNN_FP32_MIN_WEIGHT = 512 * 512


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def tracing() -> bool:
    """Under jit tracing, torch.compile or torch.export (ONNX's dynamo exporter included): the graph
    must hold portable ops whose output shapes do not depend on values."""
    return torch.jit.is_tracing() or _is_compiling()


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # not when tracing: oneDNN's op is neither exportable nor traceable by dynamo, and inductor
    # does its own weight packing; not under autocast, which only casts the ops it knows
    if not ONEDNN or torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != weight.dtype or tracing():
        return False
    if _cpu_autocast():
        return False
    if x.dtype == torch.float32:
        return weight.numel() >= _ONEDNN_FP32_MIN_WEIGHT
    return x.dtype == torch.bfloat16 and ONEDNN_BF16


def linear(x, weight, bias, owner):
    """x @ weight.T + bias; on the CPU inference path through oneDNN, with `owner` keeping the
    reordered bfloat16 weight."""
    if not uses_onednn(x, weight) or x.shape[-1] != weight.shape[-1]:
        return F.linear(x, weight, bias)  # (a width mismatch gets PyTorch's error, not oneDNN's)
    if x.dtype == torch.bfloat16:
        weight = _packed_weight(owner, weight)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def _packed_weight(owner, weight):
    cache = owner.__dict__.get("_onednn_packed")
    if cache is not None:
        source, version, sample, packed = cache
        # `source` aliases the weight it was packed from, so its address cannot be reused meanwhile
        if source.data_ptr() == weight.data_ptr() and version == weight._version and source.shape == weight.shape:
            if torch.equal(torch.take(weight, sample[0]), sample[1]):
                return packed
    points = torch.linspace(0, weight.numel() - 1, _SAMPLE_POINTS, dtype=torch.float64).long()
    # rows hint 64: the format oneDNN picks is the same for the 1 to 2,500 rows CLIP feeds it
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 64)
    owner.__dict__["_onednn_packed"] = (weight.detach(), weight._version, (points, torch.take(weight, points)), packed)
    return packed


class _KeepsPackedWeight:
    """The pack is derived data: never pickled, deep-copied or carried across .to()/.cuda()."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_onednn_packed", None)
        return state

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_onednn_packed", None)  # free the old pack now, not at the next call
        return super()._apply(fn, recurse)


class Linear(_KeepsPackedWeight, nn.Linear):
    """nn.Linear (same parameters, same state dict) with the oneDNN inference path."""

    def forward(self, x):
        return linear(x, self.weight, self.bias, self)


class PatchConv(_KeepsPackedWeight, nn.Conv2d):
    """The patch embedding's nn.Conv2d (same parameters), computed by `patch_tokens`."""


def patch_tokens(pixel_values, conv: nn.Conv2d):  # conv: kernel_size == stride, padding 0
    """The patch embedding conv (kernel = stride, no padding, no bias) as one matmul:
    (B,C,H,W) -> (B,N,D), N = (H//p)*(W//p) patches in row-major order, as conv + flatten gives.

    A strided conv with a kernel as large as its stride is a matmul over flattened patches; oneDNN's
    direct convolution runs it 1.2x (batch 32) to 4x (batch 1, bfloat16) slower.
    """
    weight = conv.weight  # D,C,p,p
    if torch.is_grad_enabled():
        # training keeps the conv, whose gradients sum in transformers' order (the matmul's
        # differ by float rounding, ~4e-6 relative, enough to leave 1e-5 parity)
        return conv._conv_forward(pixel_values, weight, conv.bias).flatten(2).transpose(1, 2)
    D, C, p, _ = weight.shape
    B, _, H, W = pixel_values.shape
    h, w = H // p, W // p
    x = pixel_values[:, :, : h * p, : w * p]  # the conv drops a remainder that fills no patch
    x = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * p * p)
    return linear(x, weight.reshape(D, C * p * p), conv.bias, conv)
