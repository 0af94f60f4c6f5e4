"""One small encoder over the three backends: the only module of clip.tasks that imports a framework.

    encoder = load_encoder("openai/clip-vit-base-patch32", backend="flax")
    image_embeds = encoder.encode_images(pixel_values)              # (N, D) float32, unit length
    text_embeds = encoder.encode_texts(input_ids, attention_mask)   # (M, D) float32, unit length
    logits = encoder.scale * image_embeds @ text_embeds.T
    vectors = encoder.encode(["cat.jpg", pil_image, hwc_array, "a photo of a cat"])  # mixed, in order

Arrays in and out are numpy; the framework (torch, TensorFlow or JAX) is imported when the
encoder is loaded, never before.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from typing import Any

import numpy as np

from clip.common import loading, weights
from clip.common.vectors import l2_normalize  # also importable from here, its former home
from clip.errors import TaskError  # noqa: F401  (also importable from here, its former home)
from clip.tasks import compiled

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
        processor,
        model,
        backend,
        image_fn,
        text_fn,
        logit_scale,
        dim,
        max_text_length,
        fingerprint=None,
        device=None,
        dtype="float32",
        network=None,
    ):
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
        self._crops_to_pixels = None  # clip.tasks.crops.device_pixels, built on the first encode_crops

    @property
    def scale(self) -> float:
        return float(np.exp(self.logit_scale))

    @property
    def image_size(self) -> tuple[int, int]:
        crop = self.processor.image_processor.crop_size
        return crop["height"], crop["width"]

    def encode_images(self, pixel_values) -> np.ndarray:
        """(N, 3, H, W) float32 pixels (as the processor returns them) -> (N, D) unit vectors."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if len(pixel_values) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._image_fn(pixel_values))

    def encode_crops(self, crops) -> np.ndarray:
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

    def encode_texts(self, input_ids, attention_mask=None) -> np.ndarray:
        """(M, L) token ids (+ mask) -> (M, D) unit vectors."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        if len(input_ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._text_fn(input_ids, np.asarray(attention_mask, dtype=np.int64)))

    def tokenize(self, texts) -> dict:
        """Texts -> {"input_ids", "attention_mask"} padded to the longest, cut to max_text_length."""
        return dict(
            self.processor(
                text=list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="np"
            )
        )

    def embed_texts(self, texts, batch_size: int = 256, return_tensors: str = "np"):
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

    def embed_images(self, images, batch_size: int = 64, return_tensors: str = "np"):
        """PIL images, numpy HxWxC arrays or paths -> (N, D) unit vectors, in batches; an image
        that cannot be read is an error naming it."""
        images = list(images)
        return as_tensors(self._image_vectors(images, range(len(images)), batch_size), return_tensors)

    def _image_vectors(self, images, positions, batch_size):
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

    def encode(self, items, batch_size: int = 64, return_tensors: str = "np"):
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
        items = [items] if single else list(items)
        image_at, text_at = [], []
        for position, item in enumerate(items):
            if isinstance(item, str) and not os.path.isfile(item):
                text_at.append(position)
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
        out = np.zeros((len(items), self.dim), np.float32)
        if image_at:
            out[image_at] = self._image_vectors([items[i] for i in image_at], image_at, batch_size)
        if text_at:
            out[text_at] = self.embed_texts([items[i] for i in text_at], max(batch_size, 256))
        return as_tensors(out[0] if single else out, return_tensors)

    def preprocess(self, images) -> np.ndarray:
        """PIL images, numpy HxWxC (or CHW) arrays or paths -> (N, 3, H, W) float32 pixels."""
        return np.asarray(self.processor.image_processor(list(images), return_tensors="np")["pixel_values"])

    def __repr__(self):
        return (
            f"Encoder(model={self.model!r}, backend={self.backend!r}, device={self.device!r}, "
            f"dtype={self.dtype!r}, dim={self.dim})"
        )


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of the rows holding a NaN or an infinity."""
    return np.flatnonzero(~np.isfinite(np.asarray(vectors)).all(axis=-1))


def load_encoder(
    model=None,
    backend: str = "pt",
    processor=None,
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

    path = model
    if model is None:
        from clip.models import default_model_path

        path = default_model_path()
    path = os.fspath(path)
    if processor is None:
        processor = CLIPProcessor.from_pretrained(path)
    try:
        loader = {"pt": _load_pt, "tf": _load_tf, "flax": _load_flax}[backend]
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


class _HeldRecords(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def from_pretrained_complete(cls: Any, path: str, **kwargs) -> Any:
    """cls.from_pretrained(path, **kwargs), refused (TaskError) when the checkpoint lacks weights the
    model needs: a library call may initialize them (transformers' behaviour, with a warning), but a
    task would answer with confident probabilities from random weights. The loader's own warning
    and log lines about them are held back for the one error; its other lines are passed on."""
    logger, held = logging.getLogger("clip"), _HeldRecords()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*newly initialized", category=UserWarning)
            loaded = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate
    net, info = loaded[0], loaded[-1]
    if info["missing_keys"]:
        total = len(weights.expected_parameters(net.config, "CLIPModel"))
        message = loading.missing_weights_message(path, info["missing_keys"], total)
        raise TaskError(message + "; the tasks need a complete checkpoint")
    for record in held.records:
        logger.handle(record)
    return net


def parse_device(device: str | None) -> tuple[str, int] | None:
    """ "auto" -> None; "cpu" -> ("cpu", 0); "cuda", "gpu", "cuda:N", "gpu:N" -> ("gpu", N)."""
    text = str(device).strip().lower()
    if text == "auto":
        return None
    kind, _, index = text.partition(":")
    if (
        kind in ("cpu", "cuda", "gpu")
        and (not index or index.isdigit())
        and not (kind == "cpu" and index not in ("", "0"))
    ):
        return ("cpu" if kind == "cpu" else "gpu", int(index or 0))
    raise TaskError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def weights_fingerprint(model, backend: str) -> str:
    """clip.common.weights.fingerprint of a model of `backend` ("pt", "tf" or "flax"): its canonical
    arrays through the backend's adapter, one tensor at a time on the host; the same for the same
    weights in every backend."""
    adapter = importlib.import_module(f"clip.{backend}.adapter")
    return weights.fingerprint(adapter.canonical_arrays(model).items())


def _no_gpu(backend, index, seen):
    return TaskError(f"device cuda:{index} asked for, but {backend} sees {seen} GPU(s); use --device cpu or auto")


def _load_pt(path, place, dtype, compile=False):
    import torch

    from clip.pt import CLIPModel

    if place is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif place[0] == "gpu":
        if place[1] >= torch.cuda.device_count():
            raise _no_gpu("torch", place[1], torch.cuda.device_count())
        device = torch.device("cuda", place[1])
    else:
        device = torch.device("cpu")
    net = from_pretrained_complete(CLIPModel, path, dtype="float32", device=device).eval()
    # the checkpoint's identity, before any cast: the same whatever dtype the vectors are computed in
    fingerprint = weights_fingerprint(net, "pt")
    logit_scale = net.logit_scale.item()  # in float32: a bfloat16 temperature would shift every probability
    net = net.to(getattr(torch, dtype))
    # texts trimmed on the host: the tower never waits for the device to say where they end
    image_fn, text_fn = compiled.pt_calls(net, device, compile=compile)
    return image_fn, text_fn, logit_scale, net.config, fingerprint, str(device), net


def _load_tf(path, place, dtype):
    import contextlib

    from clip.tasks.quiet_tensorflow import import_tensorflow_quietly

    tf = import_tensorflow_quietly()

    from clip.tf import TFCLIPModel

    gpus = tf.config.list_physical_devices("GPU")
    if place is not None and place[0] == "gpu" and place[1] >= len(gpus):
        raise _no_gpu("TensorFlow", place[1], len(gpus))
    tf_device = None if place is None else f"/{place[0].upper()}:{place[1]}"
    where = (lambda: tf.device(tf_device)) if tf_device else contextlib.nullcontext  # None: TensorFlow's own placement
    with where():  # mixed precision: float32 variables (the checkpoint's values), narrow compute
        net = from_pretrained_complete(TFCLIPModel, path, **({} if dtype == "float32" else {"dtype": f"mixed_{dtype}"}))

    def image_fn(pixels):
        with where():
            return np.asarray(net.get_image_features(pixel_values=pixels), dtype=np.float32)

    def text_fn(ids, mask):
        with where():
            return np.asarray(net.get_text_features(input_ids=ids, attention_mask=mask), dtype=np.float32)

    fingerprint = weights_fingerprint(net, "tf")
    device = tf_device or ("/GPU:0" if gpus else "/CPU:0")
    return image_fn, text_fn, float(np.asarray(net.logit_scale)), net.config, fingerprint, device, net


def _load_flax(path, place, dtype, attention="matmul"):
    import jax

    from clip.flax import FlaxCLIPModel

    if place is None:
        device = jax.devices()[0]  # JAX's default: its accelerator when it has one
    else:
        try:
            found = jax.devices(place[0])
        except RuntimeError:  # no backend of that kind
            found = []
        if place[1] >= len(found):
            raise _no_gpu("JAX", place[1], len(found)) if place[0] == "gpu" else TaskError("JAX sees no CPU device")
        device = found[place[1]]
    net = from_pretrained_complete(FlaxCLIPModel, path, dtype=getattr(jax.numpy, dtype))
    compiled.set_flax_attention(net, attention)  # before the calls are traced
    fingerprint = weights_fingerprint(net, "flax")
    logit_scale = float(np.asarray(net.params["logit_scale"]))  # in float32, before the cast
    # the params in the compute dtype, committed to the device: the jitted calls run where they are
    net.params = params = jax.device_put(jax.tree.map(lambda a: a.astype(dtype), net.params), device)
    image_jit = jax.jit(lambda p, x: net.get_image_features(x, params=p))
    text_jit = jax.jit(lambda p, ids, mask: net.get_text_features(ids, mask, params=p))
    pad_id = net.config.text_config.pad_token_id

    def image_fn(pixels):
        return np.asarray(image_jit(params, pixels), dtype=np.float32)

    def text_fn(ids, mask):
        # pad the length to a multiple of 8 so that a few compiled shapes serve every batch; the
        # added positions are masked out and lie after the end token, so the result is unchanged
        extra = -ids.shape[1] % 8
        if extra and ids.shape[1] + extra <= net.config.text_config.max_position_embeddings:
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id)
            mask = np.pad(mask, ((0, 0), (0, extra)))
        return np.asarray(text_jit(params, ids, mask), dtype=np.float32)

    return image_fn, text_fn, logit_scale, net.config, fingerprint, str(device), net
