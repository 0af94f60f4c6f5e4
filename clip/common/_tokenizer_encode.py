"""Turning token ids into a tokenizer's output: special tokens, truncation, padding, extra fields.

Shared by both CLIP tokenizers: each only turns texts into content ids (and offsets); what
transformers does to them afterwards (truncation with its side and stride, overflow windows,
special tokens, token type ids, masks, lengths, padding) happens here, in Python, on per-call
values. Nothing here mutates the tokenizer, so one instance is safe to share between threads.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np

from clip.errors import InputError

from .batch import BatchEncoding, check_tensor_type, to_numpy, to_tensor

# transformers writes a huge model_max_length (int(1e30)) for "no limit"; treat it as one.
UNLIMITED = int(1e20)
_SIDES = ("right", "left")
_TRUNCATION = {
    True: "longest_first",
    "longest_first": "longest_first",
    "only_first": "only_first",
    "only_second": "only_second",
}
_NO_TRUNCATION = (None, False, "do_not_truncate")
# Fill values of each field for padded positions (transformers' choices).
PAD_VALUES = {"token_type_ids": 0, "special_tokens_mask": 1, "attention_mask": 0, "offset_mapping": (0, 0)}


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class Plan:
    """What one call asks for, checked once, by transformers' rules."""

    pad_mode: str | None  # None, "longest" or "max_length"
    truncate_to: int | None  # total length rows are cut to (special tokens included); None: no cut
    strategy: str  # longest_first, only_first or only_second (pairs)
    max_length: int | None
    pad_to_multiple_of: int | None
    padding_side: str
    truncation_side: str
    stride: int = 0
    fields: dict = field(default_factory=dict)  # which optional fields to return


def make_plan(
    tokenizer,
    *,
    padding,
    truncation,
    max_length,
    pad_to_multiple_of,
    padding_side,
    truncation_side,
    stride,
    num_special,
) -> Plan:
    if padding is True or padding == "longest":
        pad_mode = "longest"
    elif padding is False or padding == "do_not_pad" or padding is None:
        pad_mode = None
    elif padding == "max_length":
        pad_mode = "max_length"
    else:
        raise InputError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    # transformers' backward-compatible rule: max_length alone switches truncation on.
    if max_length is not None and padding is False and truncation is None:
        truncation = True
    if truncation in _NO_TRUNCATION:
        strategy = None
    elif isinstance(truncation, (bool, str)) and truncation in _TRUNCATION:
        strategy = _TRUNCATION[truncation]
    else:
        raise InputError(
            "truncation must be True, False, None, 'longest_first', 'only_first', 'only_second' or "
            f"'do_not_truncate', got {truncation!r}"
        )
    if max_length is not None and not positive_int(max_length):
        raise InputError(f"max_length must be a positive int or None, got {max_length!r}")
    if pad_to_multiple_of is not None and not positive_int(pad_to_multiple_of):
        raise InputError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise InputError(f"stride must be a non-negative int, got {stride!r}")
    padding_side = tokenizer.padding_side if padding_side is None else padding_side
    truncation_side = tokenizer.truncation_side if truncation_side is None else truncation_side
    for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
        if side not in _SIDES:
            raise InputError(f"{name} must be 'right' or 'left', got {side!r}")
    if max_length is None and (strategy or pad_mode == "max_length"):
        if tokenizer.model_max_length >= UNLIMITED:
            strategy = None
            pad_mode = None if pad_mode == "max_length" else pad_mode
        else:
            max_length = tokenizer.model_max_length
    if pad_mode and tokenizer.pad_token is None:
        raise InputError("padding needs a pad token, and this tokenizer has none (pass pad_token=...)")
    if strategy and pad_mode and pad_to_multiple_of and max_length % pad_to_multiple_of:
        raise InputError(f"truncation length {max_length} is not a multiple of pad_to_multiple_of {pad_to_multiple_of}")
    if strategy and max_length < num_special:
        raise InputError(f"max_length={max_length} leaves no room for the {num_special} special tokens")
    return Plan(
        pad_mode,
        max_length if strategy else None,
        strategy or "longest_first",
        max_length,
        pad_to_multiple_of,
        padding_side,
        truncation_side,
        stride,
    )


def truncate_pair(ids, pair_ids, remove: int, strategy: str, side: str, stride: int = 0):
    """(ids, pair_ids, overflowing ids) with `remove` ids dropped by a transformers strategy.

    One sequence (or only_first / only_second) loses its ids at `side`, and the overflow keeps
    `stride` of the ids that stay; longest_first on a pair first evens the two lengths, then
    takes the rest from both alternately (the longer one first), with no overflow returned.
    """
    ids, pair_ids = list(ids), (None if pair_ids is None else list(pair_ids))
    if remove <= 0:
        return ids, pair_ids, []
    if strategy == "longest_first" and pair_ids is not None:
        gap = min(abs(len(ids) - len(pair_ids)), remove)
        rest = remove - gap
        if len(ids) > len(pair_ids):
            cut_first, cut_second = gap + rest // 2, rest - rest // 2
        else:
            cut_first, cut_second = rest // 2, gap + rest - rest // 2
        return _cut(ids, cut_first, side), _cut(pair_ids, cut_second, side), []
    second = strategy == "only_second"
    if second and pair_ids is None:
        return ids, pair_ids, []
    target = pair_ids if second else ids
    # Removing all ids (or more) empties the sequence, as transformers' fast tokenizers do; its
    # slow ones log an error and leave the ids uncut.
    window = min(len(target), stride + remove)
    overflow = target[:window] if side == "left" else target[len(target) - window :]
    target = _cut(target, remove, side)
    return (ids, target, overflow) if second else (target, pair_ids, overflow)


def _cut(ids: list, count: int, side: str) -> list:
    if count <= 0:
        return ids
    return ids[count:] if side == "left" else ids[: len(ids) - count]


def overflow_windows(ids: list, keep: int, stride: int, side: str) -> list[tuple[int, int]]:
    """(start, end) windows of at most `keep` ids covering `ids`, consecutive ones sharing `stride`
    ids: the rows a fast tokenizer returns with return_overflowing_tokens, from the truncated end."""
    if stride >= keep:
        raise InputError(f"stride={stride} must be less than the {keep} ids each overflow row holds")
    n = len(ids)
    spans, start = [], 0
    while True:
        end = min(start + keep, n)
        spans.append((start, end) if side == "right" else (n - end, n - start))
        if end >= n:
            return spans
        start += keep - stride


def pad_rows(fields: dict, plan: Plan, pad_id) -> tuple[dict, int | None]:
    """Each field's rows padded to the plan's width, in place; returns (fields, width or None)."""
    rows = fields["input_ids"]
    if plan.pad_mode is None or not rows:
        return fields, None
    width = max(len(r) for r in rows) if plan.pad_mode == "longest" else plan.max_length
    assert width is not None  # make_plan: padding to max_length always has a max_length
    if plan.pad_to_multiple_of and width % plan.pad_to_multiple_of:
        width += plan.pad_to_multiple_of - width % plan.pad_to_multiple_of
    left = plan.padding_side == "left"
    for name, values in fields.items():
        fill = pad_id if name == "input_ids" else PAD_VALUES.get(name)
        if fill is None:
            continue
        for i, row in enumerate(values):
            missing = width - len(row)
            if missing > 0:
                values[i] = [fill] * missing + row if left else row + [fill] * missing
    return fields, width


def finish(fields: dict, return_tensors, batched: bool, keep_batch_axis: bool = False) -> BatchEncoding:
    """Lists -> BatchEncoding of lists (one row unwrapped for a single text) or of tensors."""
    check_tensor_type(return_tensors)
    out = BatchEncoding()
    if return_tensors is None:
        for name, rows in fields.items():
            if batched or keep_batch_axis:
                out[name] = rows
            else:
                out[name] = rows[0] if rows else rows
        return out
    for name, rows in fields.items():
        out[name] = to_tensor(stack(name, rows, return_tensors), return_tensors)
    return out


def stack(name: str, rows: list, return_tensors) -> np.ndarray:
    """Equal-length rows -> one array (int32 for TensorFlow, as transformers' tf.constant gives)."""
    dtype = np.int32 if return_tensors == "tf" else np.int64
    if rows and isinstance(rows[0], (int, np.integer)):
        return np.asarray(rows, dtype=dtype)
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise InputError(
            f"return_tensors={return_tensors!r} needs sequences of one length, but {name} has lengths "
            f"{sorted(lengths)}: pass padding=True or padding='max_length' (with truncation=True for "
            "texts longer than max_length)"
        )
    width = lengths.pop() if lengths else 0
    if name == "offset_mapping":
        return np.asarray(rows, dtype=dtype).reshape(len(rows), width, 2)
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=len(rows) * width)
    return flat.reshape(len(rows), width)


def id_arrays(rows: list, plan: Plan, special: tuple[int, int] | None, pad_id, return_tensors) -> dict:
    """input_ids and attention_mask as (batch, width) arrays, built in numpy at once.

    The common call (pad and/or truncate, tensors out, no optional fields) skips per-row lists:
    `rows` are content ids already cut to fit; `special` is (bos, eos) to put around them.
    """
    dtype = np.int32 if return_tensors == "tf" else np.int64
    extra = 2 if special else 0
    lengths = np.fromiter((len(r) + extra for r in rows), dtype=np.int64, count=len(rows))
    width = 0
    if plan.pad_mode is not None:
        width = int(lengths.max(initial=0)) if plan.pad_mode == "longest" else plan.max_length  # type: ignore[assignment]
        if plan.pad_to_multiple_of and width % plan.pad_to_multiple_of:
            width += plan.pad_to_multiple_of - width % plan.pad_to_multiple_of
    # Rows longer than the padding width stay as they are (transformers'), so they may not stack.
    padded = sorted(set(np.maximum(lengths, width).tolist()))
    if len(padded) > 1:
        raise InputError(
            f"return_tensors={return_tensors!r} needs sequences of one length, but input_ids has lengths "
            f"{padded}: pass padding=True or padding='max_length' (with truncation=True for texts longer "
            "than max_length)"
        )
    width = padded[0] if padded else 0
    columns = np.arange(width)
    start = (width - lengths)[:, None] if plan.padding_side == "left" else np.zeros((len(rows), 1), np.int64)
    end = start + lengths[:, None]
    mask = (columns >= start) & (columns < end)
    ids = np.full(mask.shape, 0 if pad_id is None else pad_id, dtype=dtype)
    content = mask if not special else (columns > start) & (columns < end - 1)
    # Boolean assignment fills row by row, left to right: exactly the tokens' order.
    ids[content] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=dtype, count=int(lengths.sum()) - extra * len(rows)
    )
    if special and len(rows):
        where = np.arange(len(rows))
        ids[where, start[:, 0]] = special[0]
        ids[where, end[:, 0] - 1] = special[1]
    return {"input_ids": ids, "attention_mask": mask.astype(dtype)}


def warn_unknown(kwargs: dict):
    if kwargs:
        # transformers' slow tokenizers log this and go on; so do we (its fast ones raise TypeError).
        warnings.warn(f"Keyword arguments {kwargs} not recognized.", UserWarning, stacklevel=3)


def as_id_rows(value, name: str) -> tuple[list, bool]:
    """Rows of ids from lists, arrays or tensors; (rows, whether a batch was given)."""
    if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], (int, np.integer))):
        return [list(value)], False
    if isinstance(value, (list, tuple)):
        rows = [to_numpy(r).tolist() if not isinstance(r, (list, tuple)) else list(r) for r in value]
        return rows, True
    array = to_numpy(value)
    if array.ndim == 1:
        return [array.tolist()], False
    if array.ndim == 2:
        return array.tolist(), True
    raise InputError(f"{name} must hold one or two dimensions of ids, got shape {array.shape}")
