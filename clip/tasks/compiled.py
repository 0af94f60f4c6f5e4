"""The encoder's model calls on fast paths: host-side text trimming, torch.compile, CUDA graphs,
and the Flax attention kernel choice. clip.tasks.framework_loaders builds its calls from these.

Every path here gives the eager path's numbers (to float rounding): tests/tasks/test_compiled.py
compares them on the CPU; bench/bench_gpu.py measures what they buy on a GPU.

The framework is imported inside the functions, when an encoder is loaded, never before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from clip.common import checks
from clip.errors import InputError

# Batches up to this size run as CUDA graphs (torch.compile's "reduce-overhead" mode): there the
# time goes to launching ~200 kernels per tower, not to computing them. Larger batches are compute
# bound and take the plain compiled graph, which holds no static memory pool per shape.
CUDA_GRAPH_MAX_BATCH = 32
TEXT_LENGTH_MULTIPLE = 8  # texts are padded to a multiple of this: a few compiled shapes serve all
FLAX_ATTENTION = ("matmul", "xla", "cudnn", "auto")  # clip.flax.layers.CLIPAttention.implementation's choices


def trim_texts(ids: np.ndarray, mask: np.ndarray, config: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids, mask or None) cut after the last pooled token; mask None when nothing is padded.

    Done on the host, so the device never has to report where the texts end: the text tower is
    causal, so tokens after the pooled one cannot change it, and an all-ones mask gives the
    causal kernel's values (the towers' own rules, clip.pt.towers.text_attention_bias).
    """
    if ids.size:
        keep = int(checks.pooled_token_positions(ids, config).max()) + 1
        ids, mask = ids[:, :keep], mask[:, :keep]
    return ids, (None if mask.all() else mask)


def pad_texts(ids: np.ndarray, mask: np.ndarray, length: int, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """ids and an explicit mask padded with masked tokens after the end up to `length` tokens.

    The added ids never win the pooling rule: 0 (1 where 0 is the end token) is below any real
    maximum and is not the end token.
    """
    mask = np.ones_like(ids) if mask is None else mask
    extra = length - ids.shape[1]
    if extra <= 0:
        return ids, mask
    fill = 1 if config.eos_token_id == 0 else 0
    return np.pad(ids, ((0, 0), (0, extra)), constant_values=fill), np.pad(mask, ((0, 0), (0, extra)))


def padded_batch(n: int) -> int:
    """The batch size a CUDA graph is recorded for: the next power of two (at most 6 graphs)."""
    return 1 << max(0, (n - 1).bit_length())


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) == rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array),) + array.shape[1:], array.dtype)])


def pt_calls(net: Any, device: Any, compile: bool = False) -> tuple[Callable, Callable]:
    """(image_fn, text_fn): numpy in, float32 numpy out, for a clip.pt.CLIPModel on `device`.

    compile: torch.compile the towers (inductor); on CUDA, batches up to CUDA_GRAPH_MAX_BATCH
    also run as CUDA graphs. The first call of each shape compiles (seconds to a minute).
    """
    import torch

    def image_forward(pixels):
        return net.get_image_features(pixel_values=pixels).float()

    def text_forward(ids, mask):
        return net.get_text_features(input_ids=ids, attention_mask=mask).float()

    config = net.config.text_config
    cuda = device.type == "cuda"
    if not compile:
        image_call, text_call = image_forward, text_forward
    else:
        # dynamic=None: a second batch size recompiles once with a symbolic batch dimension
        image_call = _by_batch(torch, torch.compile(image_forward), cuda and _graphed(torch, image_forward))
        text_call = _by_batch(torch, torch.compile(text_forward), cuda and _graphed(torch, text_forward))

    def image_fn(pixels):
        """numpy pixels, or a torch tensor already on the device (clip.tasks.gpu_decode.pixels_from_crops)."""
        n = len(pixels)
        with torch.inference_mode():
            x = (pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(pixels)).to(device)
            if compile and cuda and n <= CUDA_GRAPH_MAX_BATCH and padded_batch(n) > n:
                x = torch.cat([x, x.new_zeros((padded_batch(n) - n, *x.shape[1:]))])
            return image_call(x).cpu().numpy()[:n]

    def text_fn(ids, mask):
        ids, mask = trim_texts(ids, mask, config)
        n = len(ids)
        if compile:  # one mask-ful graph per shape: lengths in steps, small CUDA batches at full length
            small = cuda and n <= CUDA_GRAPH_MAX_BATCH
            rounded_up = -(-ids.shape[1] // TEXT_LENGTH_MULTIPLE) * TEXT_LENGTH_MULTIPLE
            length = config.max_position_embeddings if small else rounded_up
            ids, mask = pad_texts(ids, mask, min(length, config.max_position_embeddings), config)
            if small:
                ids, mask = pad_rows(ids, padded_batch(n)), pad_rows(mask, padded_batch(n))
        with torch.inference_mode():
            mask = None if mask is None else torch.from_numpy(mask).to(device)
            return text_call(torch.from_numpy(ids).to(device), mask).cpu().numpy()[:n]

    return image_fn, text_fn


def _graphed(torch, forward):
    return torch.compile(forward, mode="reduce-overhead", dynamic=False)


def _by_batch(torch, compiled, graphed):
    """The CUDA-graph call for small batches (`graphed`, or False off CUDA), `compiled` for the rest."""

    def call(first, *rest):
        if graphed and len(first) <= CUDA_GRAPH_MAX_BATCH:
            # a new step: the outputs of the previous replay may be overwritten (they were copied out)
            torch.compiler.cudagraph_mark_step_begin()
            return graphed(first, *rest)
        return compiled(first, *rest)

    return call


def set_flax_attention(net: Any, implementation: str) -> None:
    """Route every attention of a clip.flax model through `implementation` (FLAX_ATTENTION):
    "matmul" the explicit batched matmuls (the default), "xla"/"cudnn" jax.nn.dot_product_attention
    with that implementation, "auto" the same with JAX's own choice (cuDNN's fused kernel where
    the GPU, dtype and shapes allow it)."""
    from flax import nnx

    from clip.flax.layers import CLIPAttention

    if implementation not in FLAX_ATTENTION:
        raise InputError(f"unknown Flax attention {implementation!r}; choose one of {', '.join(FLAX_ATTENTION)}")
    for _, node in nnx.iter_graph(net.module):
        if isinstance(node, CLIPAttention):
            node.implementation = implementation
    net.graphdef = nnx.split(net.module)[0]  # the graph the jitted calls merge params into
