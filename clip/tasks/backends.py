"""One small encoder over the three backends; clip.tasks.framework_loaders loads the model into each.

    encoder = load_encoder("openai/clip-vit-base-patch32", backend="flax")
    image_embeds = encoder.encode_images(pixel_values)              # (N, D) float32, unit length
    text_embeds = encoder.encode_texts(input_ids, attention_mask)   # (M, D) float32, unit length
    logits = encoder.scale * image_embeds @ text_embeds.T
    vectors = encoder.encode(["cat.jpg", pil_image, hwc_array, "a photo of a cat"])  # mixed, in order

Arrays in and out are numpy; the framework (torch, TensorFlow or JAX) is imported when the
encoder is loaded, never before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np
from numpy.typing import ArrayLike

from clip.common.vectors import l2_normalize  # also importable from here, its former home
from clip.errors import TaskError  # also importable from here, its former home
from clip.tasks import compiled
from clip.tasks.framework_loaders import ImageCall, LoadedModel, TextCall, _load_flax, _load_pt, _load_tf, parse_device
from clip.tasks.framework_loaders import from_pretrained_complete as from_pretrained_complete  # former home
from clip.tasks.framework_loaders import weights_fingerprint as weights_fingerprint  # former home

if TYPE_CHECKING:
    from PIL import Image

    from clip.common.processor import CLIPProcessor

# What the image methods take: a path, a PIL image or an HxW / HxWxC numpy array.
ImageSource: TypeAlias = "str | os.PathLike[str] | Image.Image | np.ndarray"

BACKENDS = ("pt", "tf", "flax")
DTYPES = ("float32", "bfloat16", "float16")  # what the model computes in; vectors come out as float32
_INSTALL = {"pt": "torch", "tf": "tf", "flax": "flax"}


TENSOR_KINDS = ("np", "pt", "tf", "jax")


def as_tensors(vectors: np.ndarray, return_tensors: str | None = "np") -> Any:
    """`vectors` as numpy ("np" or None), a torch tensor ("pt"), a TensorFlow tensor ("tf") or a
    JAX array ("jax"), on the framework's default device."""
    if return_tensors in (None, "np"):
        return vectors
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(vectors)
    if return_tensors == "tf":
        import tensorflow as tf

        return tf.convert_to_tensor(vectors)
    if return_tensors in ("jax", "flax"):
        import jax.numpy as jnp

        return jnp.asarray(vectors)
    raise TaskError(f"return_tensors={return_tensors!r}: choose one of {', '.join(TENSOR_KINDS)}")


class Encoder:
    """A loaded CLIP model and its processor behind numpy-in, numpy-out calls.

    model: the name it was loaded from (None for the embedded default); backend: "pt", "tf" or
    "flax"; logit_scale: the model's (log) temperature parameter, `scale` = exp(logit_scale);
    dim: the embedding width; max_text_length: the longest token sequence the text tower takes;
    fingerprint: clip.common.weights.fingerprint of the checkpoint's weights (the same in every
    backend and dtype); device: where the model runs, in the framework's words; dtype: what it
    computes in; network: the framework's CLIPModel behind the calls (clip.pt.CLIPModel,
    clip.tf.TFCLIPModel or clip.flax.FlaxCLIPModel), for tasks that need more than embeddings
    (clip.tasks.explain differentiates through it).
    """

    def __init__(
        self,
        processor: CLIPProcessor,
        model: str | os.PathLike[str] | None,
        backend: str,
        image_fn: ImageCall,
        text_fn: TextCall,
        logit_scale: float,
        dim: int,
        max_text_length: int,
        fingerprint: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        network: Any = None,
    ) -> None:
        self.processor = processor
        self.model = model
        self.network = network
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.fingerprint = fingerprint
        self._image_fn, self._text_fn = image_fn, text_fn
        self.logit_scale = float(logit_scale)
        self.dim = int(dim)
        self.max_text_length = int(max_text_length)
        self._crops_to_pixels: Callable[[np.ndarray], Any] | None = (
            None  # clip.tasks.crops.device_pixels, built on the first encode_crops
        )

    @property
    def scale(self) -> float:
        return float(np.exp(self.logit_scale))

    @property
    def image_size(self) -> tuple[int, int]:
        crop = cast(dict[str, int], self.processor.image_processor.crop_size)  # normalized by the processor
        return crop["height"], crop["width"]

    def encode_images(self, pixel_values: ArrayLike) -> np.ndarray:
        """(N, 3, H, W) float32 pixels (as the processor returns them) -> (N, D) unit vectors."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if len(pixel_values) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._image_fn(pixel_values))

    def encode_crops(self, crops: ArrayLike) -> np.ndarray:
        """(N, H, W, 3) uint8 crops, resized and center-cropped to image_size (what clip.tasks.embed's
        decode workers return) -> (N, D) unit vectors. Rescale and normalize run on the model's
        device, one gather per batch (clip.tasks.crops): the processor's float32 pixels exactly, so
        the vectors are encode_images(preprocess(images))'s."""
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (*self.image_size, 3):
            raise TaskError(
                f"crops must be (N, {self.image_size[0]}, {self.image_size[1]}, 3) uint8, "
                f"got {crops.shape} {crops.dtype}"
            )
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self._crops_to_pixels is None:
            from clip.tasks.crops import device_pixels

            self._crops_to_pixels = device_pixels(self)
        return l2_normalize(self._image_fn(self._crops_to_pixels(np.ascontiguousarray(crops))))

    def encode_texts(self, input_ids: ArrayLike, attention_mask: ArrayLike | None = None) -> np.ndarray:
        """(M, L) token ids (+ mask) -> (M, D) unit vectors."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        if len(input_ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._text_fn(input_ids, np.asarray(attention_mask, dtype=np.int64)))

    def tokenize(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Texts -> {"input_ids", "attention_mask"} padded to the longest, cut to max_text_length."""
        return dict(
            self.processor(
                text=list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="np"
            )
        )

    def embed_texts(self, texts: Iterable[str], batch_size: int = 256, return_tensors: str = "np") -> Any:
        """A list of strings -> (M, D) unit vectors, in batches (numpy, or see as_tensors); a text whose
        vector is not finite (NaN or inf: a float16 overflow, a damaged checkpoint) is a TaskError naming it."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start : start + batch_size])
            out[start : start + batch_size] = self.encode_texts(tokens["input_ids"], tokens["attention_mask"])
        bad = nonfinite_rows(out)
        if len(bad):
            shown = ", ".join(repr(texts[i]) for i in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise TaskError(f"the model's vectors for {len(bad)} text(s) are {self.nonfinite_reason()}: {shown}")
        return as_tensors(out, return_tensors)

    def nonfinite_reason(self) -> str:
        """Why a vector may be NaN or inf, and what to try (for messages naming the input)."""
        hint = (
            f"; {self.dtype} overflows where float32 does not: try --dtype float32"
            if self.dtype == "float16"
            else ("; try --dtype float32" if self.dtype != "float32" else "; the checkpoint's weights may be damaged")
        )
        return f"not finite (NaN or inf) in {self.dtype}{hint}"

    def embed_images(self, images: Iterable[ImageSource], batch_size: int = 64, return_tensors: str = "np") -> Any:
        """PIL images, numpy HxWxC arrays or paths -> (N, D) unit vectors, in batches; an image
        that cannot be read is an error naming it."""
        images = list(images)
        return as_tensors(self._image_vectors(images, range(len(images)), batch_size), return_tensors)

    def _image_vectors(self, images: list[ImageSource], positions: Sequence[int], batch_size: int) -> np.ndarray:
        from clip.tasks.embed import load_image

        out = np.zeros((len(images), self.dim), np.float32)
        for start in range(0, len(images), batch_size):
            batch = []
            for image, position in zip(images[start : start + batch_size], positions[start : start + batch_size]):
                try:
                    batch.append(load_image(image))  # decoded RGB: the processor takes every one of them
                except ValueError as err:  # a path's error names the file; an array's gets its position
                    message = err if isinstance(image, (str, os.PathLike)) else f"item {position}: {err}"
                    raise TaskError(message) from None
            out[start : start + batch_size] = self.encode_images(self.preprocess(batch))
        return out

    def encode(
        self, items: ImageSource | Iterable[ImageSource], batch_size: int = 64, return_tensors: str = "np"
    ) -> Any:
        """A list mixing PIL images, numpy HxWxC arrays, paths and texts -> (N, D) unit float32
        vectors in the same order, as sentence-transformers' model.encode (numpy, or the
        framework's tensor with return_tensors="pt", "tf" or "jax").

        A str naming an existing file is an image, any other str a text; a pathlib.Path is
        always an image (a missing one is an error). One item (not in a list) gives one vector
        (D,); an N x H x W x C array is N images.
        """
        from PIL import Image

        single = isinstance(items, (str, os.PathLike, Image.Image)) or (
            isinstance(items, np.ndarray) and items.ndim in (2, 3)
        )
        listed = [cast("ImageSource", items)] if single else list(cast("Iterable[ImageSource]", items))
        image_at: list[int] = []
        text_at: list[int] = []
        texts: list[str] = []
        for position, item in enumerate(listed):
            if isinstance(item, str) and not os.path.isfile(item):
                text_at.append(position)
                texts.append(item)
            elif isinstance(item, (str, os.PathLike, Image.Image)) or (
                isinstance(item, np.ndarray) and item.ndim in (2, 3)
            ):
                image_at.append(position)
            else:
                shape = f" of shape {item.shape}" if isinstance(item, np.ndarray) else ""
                raise TaskError(
                    f"item {position}: {type(item).__name__}{shape} is neither a text, an image path, "
                    "a PIL image nor an HxWxC array"
                )
        out = np.zeros((len(listed), self.dim), np.float32)
        if image_at:
            out[image_at] = self._image_vectors([listed[i] for i in image_at], image_at, batch_size)
        if text_at:
            out[text_at] = self.embed_texts(texts, max(batch_size, 256))
        return as_tensors(out[0] if single else out, return_tensors)

    def preprocess(self, images: Iterable[ImageSource]) -> np.ndarray:
        """PIL images, numpy HxWxC (or CHW) arrays or paths -> (N, 3, H, W) float32 pixels."""
        return np.asarray(self.processor.image_processor(list(images), return_tensors="np")["pixel_values"])

    def __repr__(self) -> str:
        return (
            f"Encoder(model={self.model!r}, backend={self.backend!r}, device={self.device!r}, "
            f"dtype={self.dtype!r}, dim={self.dim})"
        )


def nonfinite_rows(vectors: ArrayLike) -> np.ndarray:
    """Indices of the rows holding a NaN or an infinity."""
    return np.flatnonzero(~np.isfinite(np.asarray(vectors)).all(axis=-1))


def load_encoder(
    model: str | os.PathLike[str] | None = None,
    backend: str = "pt",
    processor: CLIPProcessor | None = None,
    device: str = "auto",
    dtype: str = "float32",
    compile: bool = False,
    flax_attention: str = "matmul",
) -> Encoder:
    """Load `model` (a local directory or hub id; None: the embedded default) in `backend`.

    device: "auto" (the framework's first GPU when it sees one, else the CPU), "cpu", "cuda" (or
    "gpu") or "cuda:N"; a GPU the framework does not see is an error, never a silent CPU run.
    dtype: "float32" (default), "bfloat16" (1.5-1.9x faster than float32 on an AVX-512 BF16 CPU,
    ViT-B/32 in batches of 32, in every backend; unit vectors within ~1e-2 of float32's) or
    "float16" (for GPUs). The checkpoint's fingerprint and the temperature stay float32's.
    compile: pt only, torch.compile the towers (CUDA graphs for batches up to 32 on CUDA); the
    first call of each shape compiles. Flax is always jitted; TensorFlow has no such option.
    flax_attention: flax only, the attention kernel (clip.tasks.compiled.set_flax_attention):
    "matmul" (default), "xla", "cudnn" or "auto" (JAX's choice, cuDNN's fused kernel on GPUs).
    """
    if backend not in BACKENDS:
        raise TaskError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise TaskError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if compile and backend == "tf":
        raise TaskError("compile is for the pt backend (flax is always jitted); TensorFlow has no such option")
    if flax_attention not in compiled.FLAX_ATTENTION:
        raise TaskError(
            f"unknown flax_attention {flax_attention!r}; choose one of {', '.join(compiled.FLAX_ATTENTION)}"
        )
    place = parse_device(device)
    from clip.common.processor import CLIPProcessor

    if model is None:
        from clip.models import default_model_path

        path = os.fspath(default_model_path())
    else:
        path = os.fspath(model)
    if processor is None:
        processor = CLIPProcessor.from_pretrained(path)
    try:
        loaders: dict[str, Callable[..., LoadedModel]] = {"pt": _load_pt, "tf": _load_tf, "flax": _load_flax}
        loader = loaders[backend]
        options: dict[str, object] = (
            {"compile": compile} if backend == "pt" else {"attention": flax_attention} if backend == "flax" else {}
        )
        image_fn, text_fn, logit_scale, config, fingerprint, where, network = loader(path, place, dtype, **options)
    except ImportError as err:
        raise TaskError(
            f"backend {backend!r} needs a framework that is not installed ({err}); "
            f"install it with: pip install 'clip[{_INSTALL[backend]}]'"
        ) from None
    if not np.isfinite(np.exp(np.float64(logit_scale))):
        raise TaskError(f"{path}: logit_scale is {logit_scale}, its exponential (the temperature) is not finite")
    max_len = min(config.text_config.max_position_embeddings, processor.tokenizer.model_max_length)
    return Encoder(
        processor,
        model,
        backend,
        image_fn,
        text_fn,
        logit_scale,
        config.projection_dim,
        max_len,
        fingerprint,
        where,
        dtype,
        network,
    )
