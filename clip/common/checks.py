"""Rules every backend shares: argument checks, the pooled text token, the classification problem type.

Initialization rules live in the parameter table (clip.common.params).

Everything here works on plain Python values (shapes as tuples, dtypes as names such as
"int64" or "float32"), so PyTorch, TensorFlow and Flax call the same code and raise the same
errors. Nothing here imports a deep-learning framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from clip.common.config import CLIPTextConfig, CLIPVisionConfig

# A torch, TensorFlow, JAX or numpy array: the checks read its .shape and .dtype only.
Array = Any
ShapeOf = Callable[[Array, tuple[int, ...]], tuple[int, ...]]

INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64")
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

# The id that marked end-of-text before transformers PR #24773: configs that still carry it
# pool the token with the highest id (the EOT id is the largest in CLIP's vocabulary).
LEGACY_EOS_TOKEN_ID = 2


def dtype_name(dtype: object) -> str:
    """'torch.float32', tf.float32, np.dtype('float32'), jnp.float32 -> 'float32'."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    return name.rsplit(".", 1)[-1]


# -- inputs ---------------------------------------------------------------------------------------
def check_input_ids(shape: Sequence[int], dtype: object, config: CLIPTextConfig) -> None:
    """input_ids: (batch, seq_len) integers, 1 <= seq_len <= max_position_embeddings."""
    shape, dtype = tuple(shape), dtype_name(dtype)
    if len(shape) != 2:
        raise ValueError(f"input_ids must have shape (batch_size, sequence_length), got a {len(shape)}-D shape {shape}")
    if dtype not in INTEGER_DTYPES:
        raise ValueError(f"input_ids must hold integer token ids (e.g. int64), got dtype {dtype}")
    if shape[1] < 1:
        raise ValueError(f"input_ids must hold at least one token per sequence, got shape {shape}")
    if shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"input_ids has {shape[1]} tokens per sequence, more than max_position_embeddings "
            f"({config.max_position_embeddings}); truncate the text (tokenizer truncation=True)"
        )


def check_attention_mask(shape: Sequence[int], input_ids_shape: Sequence[int]) -> None:
    """attention_mask: the shape of input_ids (1 = attend, 0 = padding)."""
    if tuple(shape) != tuple(input_ids_shape):
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids_shape)}, got {tuple(shape)}"
        )


def check_position_ids(
    shape: Sequence[int], dtype: object, input_ids_shape: Sequence[int], config: CLIPTextConfig
) -> None:
    """position_ids: (batch or 1, seq_len) integers below max_position_embeddings."""
    shape, dtype = tuple(shape), dtype_name(dtype)
    batch, length = input_ids_shape
    if len(shape) != 2 or shape[1] != length or shape[0] not in (1, batch):
        raise ValueError(f"position_ids must have shape ({batch}, {length}) or (1, {length}), got {shape}")
    if dtype not in INTEGER_DTYPES:
        raise ValueError(f"position_ids must hold integers, got dtype {dtype}")


def check_pixel_values(
    shape: Sequence[int], config: CLIPVisionConfig, interpolate_pos_encoding: bool = False, dtype: object = None
) -> None:
    """pixel_values: (batch, channels, height, width) floats, the model's size unless interpolating."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"pixel_values must have shape (batch_size, {config.num_channels}, height, width) (NCHW), "
            f"got a {len(shape)}-D shape {shape}"
        )
    if dtype is not None and dtype_name(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"pixel_values must be floating point (e.g. float32), got dtype {dtype_name(dtype)}")
    _, channels, height, width = shape
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values must have {config.num_channels} channels in dimension 1 (NCHW), got shape {shape}"
        )
    size = config.image_size
    if interpolate_pos_encoding:
        if height < config.patch_size or width < config.patch_size:
            raise ValueError(
                f"pixel_values of {height}x{width} are smaller than one {config.patch_size}x{config.patch_size} patch"
            )
    elif (height, width) != (size, size):
        raise ValueError(
            f"pixel_values must be {size}x{size} (height x width) for this model, got {height}x{width}; "
            "resize them, or pass interpolate_pos_encoding=True to use another size"
        )


def _shape(array: Array, like: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(array.shape)


def check_text_inputs(
    config: CLIPTextConfig,
    input_ids: Array,
    attention_mask: Array = None,
    position_ids: Array = None,
    shape_of: ShapeOf = _shape,
) -> None:
    """Every argument check of a text tower, on shapes and dtypes only (static under jit).

    shape_of(array, like): the array's shape as a tuple; a backend whose shapes may be partly
    unknown (TensorFlow graphs) fills the unknown dimensions from `like`.
    """
    if input_ids is None:
        raise ValueError("input_ids are required (integer token ids of shape (batch_size, sequence_length))")
    ids_shape = shape_of(input_ids, (1, 1))
    check_input_ids(ids_shape, input_ids.dtype, config)
    if attention_mask is not None:
        check_attention_mask(shape_of(attention_mask, ids_shape), ids_shape)
    if position_ids is not None:
        check_position_ids(shape_of(position_ids, ids_shape), position_ids.dtype, ids_shape, config)


def check_image_inputs(
    config: CLIPVisionConfig, pixel_values: Array, interpolate_pos_encoding: bool = False, shape_of: ShapeOf = _shape
) -> None:
    """Every argument check of a vision tower (shape_of as in check_text_inputs)."""
    if pixel_values is None:
        raise ValueError("pixel_values are required (float images of shape (batch_size, channels, height, width))")
    size = config.image_size
    shape = shape_of(pixel_values, (1, config.num_channels, size, size))
    check_pixel_values(shape, config, interpolate_pos_encoding, pixel_values.dtype)


def check_batch_sizes(text_batch: int, image_batch: int) -> None:
    """The contrastive loss pairs text i with image i, so both batches must have the same size."""
    if text_batch != image_batch:
        raise ValueError(
            f"return_loss needs as many texts as images (pair i is text i and image i), "
            f"got {text_batch} texts and {image_batch} images"
        )


def check_loss_inputs(return_loss: bool | None, input_ids: Array, pixel_values: Array) -> None:
    """With return_loss, the text and image batches of a CLIPModel call must pair up (static
    sizes only: a dimension a graph leaves open, None, passes)."""
    if not return_loss or input_ids is None or pixel_values is None or len(input_ids.shape) != 2:
        return
    text_batch, image_batch = input_ids.shape[0], pixel_values.shape[0]
    if text_batch is not None and image_batch is not None:
        check_batch_sizes(text_batch, image_batch)


# -- pooling --------------------------------------------------------------------------------------
def text_pooling_rule(config: CLIPTextConfig) -> str:
    """How the text tower picks the token whose state is pooled.

    "argmax": the position of the highest token id (legacy configs with eos_token_id == 2);
    "first_eos": the first position holding config.eos_token_id (pad may equal eos).
    """
    return "argmax" if config.eos_token_id == LEGACY_EOS_TOKEN_ID else "first_eos"


def pooled_token_positions(input_ids: Array, config: CLIPTextConfig) -> np.ndarray:
    """Reference (numpy) implementation of the pooling rule: one position per sequence."""
    ids = np.asarray(input_ids)
    if text_pooling_rule(config) == "argmax":
        return ids.argmax(axis=-1)
    return (ids == config.eos_token_id).argmax(axis=-1)


# -- classification -------------------------------------------------------------------------------
def classification_problem_type(config: object, num_labels: int, labels_are_integers: bool) -> str:
    """transformers' rule: config.problem_type, else regression / single- / multi-label."""
    problem = getattr(config, "problem_type", None)
    if problem is not None:
        if problem not in ("regression", "single_label_classification", "multi_label_classification"):
            raise ValueError(f"config.problem_type {problem!r} is not supported")
        return problem
    if num_labels == 1:
        return "regression"
    if num_labels > 1 and labels_are_integers:
        return "single_label_classification"
    return "multi_label_classification"
