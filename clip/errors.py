"""One exception family for the whole library.

Every error the library raises on purpose is a `ClipError`, so `except clip.errors.ClipError`
catches exactly ours. Each one is also the builtin exception transformers raises for the same
case (ValueError for bad values, OSError for files that cannot be found or read, RuntimeError where
torch's loaders raise it), so code written against transformers keeps catching what it caught.
Nothing here imports a framework.
"""

from __future__ import annotations


class ClipError(Exception):
    """Base of every error the library raises on purpose (bad input, bad files, bad arguments)."""


class InputError(ClipError, ValueError):
    """A value, argument or input item that the library cannot use; the message names it."""


class InputTypeError(ClipError, TypeError):
    """An argument of the wrong type (or an unknown keyword argument), where transformers and Python raise
    TypeError."""


class UnreadableFileError(ClipError, OSError):
    """A file that exists but cannot be read as what it should be (empty, damaged, a Git LFS pointer)."""


class InputFileNotFoundError(ClipError, FileNotFoundError):
    """An input file or directory named by the user that does not exist."""


class TaskError(InputError):
    """A user-facing problem of a task (bad argument, unreadable input): the CLI prints it as one line."""


class CheckpointNotFoundError(ClipError, OSError):
    """A model id or path could not be resolved to the files it needs."""


class CheckpointShapeError(ClipError, ValueError, RuntimeError):
    """Tensors of a checkpoint that do not fit the model: a ValueError, and the RuntimeError
    transformers' PyTorch from_pretrained raises for the same case, so either except clause catches it."""


class ConversionError(InputError):
    """A source that is not a (supported) CLIP checkpoint, or tensors that do not fit its config."""


__all__ = [
    "ClipError",
    "InputError",
    "InputTypeError",
    "UnreadableFileError",
    "InputFileNotFoundError",
    "TaskError",
    "CheckpointNotFoundError",
    "CheckpointShapeError",
    "ConversionError",
]
