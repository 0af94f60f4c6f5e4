"""The base of the Keras models: TFCLIPPreTrainedModel, over transformers' TFPreTrainedModel surface (one mixin).

The Keras convention transformers' TF models follow: `model(inputs)` with a dict (or BatchEncoding /
BatchFeature, or a list in the call's order) as the first positional argument, the same as keywords
(`unpack_inputs`); `dummy_inputs`, `input_signature`, `serving` / `serving_output`;
`prepare_tf_dataset`. Framework-neutral parts come from clip.common.surface; the public model
classes are in clip.tf.modeling, loading and saving in clip.tf.loading.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias, TypeVar, cast

import keras
import numpy as np
import tensorflow as tf

from clip.common import params, surface, weights
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

# the config of any of the model classes: the joint one or one tower's
AnyCLIPConfig = CLIPConfig | CLIPTextConfig | CLIPVisionConfig
# what the models' inputs may be: tensors or numpy arrays (Keras converts), None where not given
TFInput: TypeAlias = "tf.Tensor | np.ndarray | None"
# from_pretrained returns the class it is called on
ModelT = TypeVar("ModelT", bound="TFCLIPPreTrainedModel")


def unpack_inputs(method):
    """call(inputs_dict) / call([input_ids, ...]) -> call(**inputs): the first positional argument
    may hold the inputs as a mapping (dict, BatchEncoding, BatchFeature) or a list/tuple in the
    signature's order; keywords given beside it win, as in transformers."""
    names = [n for n in inspect.signature(method).parameters if n != "self"]

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if args and isinstance(args[0], Mapping):
            unknown = sorted(set(args[0]) - set(names))
            if unknown:
                raise ValueError(
                    f"{type(self).__name__}: the inputs hold keys it does not take: {unknown}; "
                    f"it takes {', '.join(names)}"
                )
            kwargs = {**dict(args[0]), **kwargs}
            args = args[1:]
        elif args and isinstance(args[0], (list, tuple)):
            if len(args[0]) > len(names):
                raise ValueError(f"{type(self).__name__}: {len(args[0])} inputs given, it takes at most {len(names)}")
            kwargs = {**dict(zip(names, args[0])), **kwargs}
            args = args[1:]
        return method(self, *args, **kwargs)

    return wrapper


# Set while from_pretrained builds a model: drawing the whole init in numpy only to overwrite it with
# the checkpoint cost more than the load itself (ViT-B/32); the loader initializes what is missing.
_LOADING: contextvars.ContextVar[bool] = contextvars.ContextVar("clip_tf_loading", default=False)


@contextlib.contextmanager
def building_for_load() -> Iterator[None]:
    token = _LOADING.set(True)
    try:
        yield
    finally:
        _LOADING.reset(token)


class TFPreTrainedSurface(surface.ConfigSurface):
    """Mixed into keras.Model; subclasses set config_class, canonical_class, main_input_name."""

    # what the mixin reads from the model it is mixed into: set by TFCLIPPreTrainedModel and the
    # model classes ...
    config: AnyCLIPConfig
    config_class: type[AnyCLIPConfig]
    canonical_class: str  # the class's name in clip.common.weights and in transformers' PyTorch
    canonical_variables: Callable[[], dict[str, tuple[Any, str]]]
    call: Callable[..., Any]
    # ... and provided by keras.Model (an annotation only: the lookup still reaches Keras')
    trainable_variables: list[Any]

    base_model_prefix = "clip"
    main_input_name = "input_ids"
    framework = "tf"

    def __call__(self, *args, **kwargs):
        # Keras takes only plain dicts of tensors as the first positional argument: BatchEncoding and
        # BatchFeature (UserDicts) pass as the dicts they are
        if args and isinstance(args[0], Mapping) and not isinstance(args[0], dict):
            args = (dict(args[0]), *args[1:])
        return super().__call__(*args, **kwargs)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        trainable = {id(v) for v in self.trainable_variables}
        entries = [
            (int(np.prod(variable.shape)), id(variable) in trainable, kind == "embedding")  # the table's kind
            for variable, kind in self.canonical_variables().values()
        ]
        return surface.count_parameters(entries, only_trainable, exclude_embeddings)

    def get_input_embeddings(self):
        raise NotImplementedError(
            f"{type(self).__name__} has no single input embedding (as in transformers' PyTorch CLIP)"
        )

    def set_input_embeddings(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no input embedding to replace")

    def get_output_embeddings(self):
        return None

    # -- inputs a serving graph takes -----------------------------------------------------------------
    def _input_names(self) -> tuple:
        names: tuple[str, ...] = ()
        if "Vision" not in self.canonical_class:
            names += ("input_ids", "attention_mask")
        if "Text" not in self.canonical_class:
            names += ("pixel_values",)
        return names

    def _vision_config(self) -> CLIPVisionConfig:
        # called for models that take pixel_values: the vision models and TFCLIPModel
        return cast(CLIPVisionConfig, getattr(self.config, "vision_config", self.config))

    @property
    def input_signature(self) -> dict:
        """{name: tf.TensorSpec} of the inputs, batch (and text length) open, as transformers declares them."""
        specs = {}
        for name in self._input_names():
            if name == "pixel_values":
                vision = self._vision_config()
                specs[name] = tf.TensorSpec(
                    (None, vision.num_channels, vision.image_size, vision.image_size), tf.float32, name=name
                )
            else:
                specs[name] = tf.TensorSpec((None, None), tf.int32, name=name)
        return specs

    @property
    def dummy_inputs(self) -> dict:
        """A tiny batch of every input (ones), enough to build or trace the model."""
        return {
            name: tf.ones(
                [1 if d is None else d for d in spec.shape[:1]] + [2 if d is None else d for d in spec.shape[1:]],
                spec.dtype,
            )
            for name, spec in self.input_signature.items()
        }

    def serving_output(self, output):
        """The outputs a serving graph returns: every set field, as nested plain dicts (what a
        SavedModel signature can carry; transformers' outputs are dicts already)."""
        return _plain_dict(output)

    @property
    def serving(self):
        """A tf.function over input_signature (one dict argument) returning serving_output(call(inputs))."""
        fn = self.__dict__.get("_serving_fn")
        if fn is None:

            def serve(inputs):
                return self.serving_output(self.call(**inputs))

            fn = tf.function(serve, input_signature=[self.input_signature])
            object.__setattr__(self, "_serving_fn", fn)  # outside Keras' attribute tracking
        return fn

    # -- data ---------------------------------------------------------------------------------------
    def prepare_tf_dataset(
        self,
        dataset,
        batch_size: int = 8,
        shuffle: bool = True,
        tokenizer=None,
        collate_fn=None,
        collate_fn_args=None,
        drop_remainder=None,
        prefetch: bool = True,
    ):
        """A tf.data.Dataset of input dicts from `dataset`: a datasets.Dataset (anything with
        column_names and row access) or a {column: values} mapping. Columns the model does not take
        are dropped, as in transformers; rows are batched by `collate_fn`, else padded by
        `tokenizer.pad` when given, else stacked."""
        columns = _columns(dataset)
        names = list(inspect.signature(self.call).parameters)
        keep = [c for c in columns if c in names]
        if not keep:
            raise ValueError(
                f"prepare_tf_dataset: none of the dataset's columns {columns} is an input of {type(self).__name__}"
            )
        rows = _rows(dataset, keep)
        collate = _collate(collate_fn, collate_fn_args, tokenizer)
        order = np.random.default_rng().permutation(len(rows)) if shuffle else np.arange(len(rows))
        drop = bool(drop_remainder) if drop_remainder is not None else shuffle  # transformers' default
        stop = len(rows) - len(rows) % batch_size if drop else len(rows)
        first = _as_numpy(collate([rows[i] for i in order[:batch_size]]))
        signature = {k: tf.TensorSpec((None,) * v.ndim, tf.as_dtype(v.dtype)) for k, v in first.items()}

        def batches():
            for start in range(0, stop, batch_size):
                yield _as_numpy(collate([rows[i] for i in order[start : start + batch_size]]))

        data = tf.data.Dataset.from_generator(batches, output_signature=signature)
        data = data.apply(tf.data.experimental.assert_cardinality(-(-stop // batch_size)))
        return data.prefetch(tf.data.AUTOTUNE) if prefetch else data


def fit_batch_inputs(data: Any) -> dict[str, Any]:
    """A batch of TFCLIPModel.fit/evaluate -> its call kwargs: a dict, or (input_ids, attention_mask, pixel_values)."""
    if isinstance(data, (tuple, list)):  # Keras' adapters pass (x, y, sample_weight), y and weight None here
        data = tuple(data)
        while len(data) > 1 and data[-1] is None:
            data = data[:-1]
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, (tuple, list)) and len(data) == 1 and isinstance(data[0], dict):
        return dict(data[0])  # (x,) as Keras' adapters may wrap it
    if isinstance(data, (tuple, list)) and len(data) == 3:
        return dict(zip(("input_ids", "attention_mask", "pixel_values"), data))
    raise ValueError(
        "TFCLIPModel trains on batches of {'input_ids', 'attention_mask', 'pixel_values'} or tuples "
        f"(input_ids, attention_mask, pixel_values); got {type(data).__name__}"
    )


def _plain_dict(output):
    if hasattr(output, "items") and hasattr(output, "to_tuple"):
        return {key: _plain_dict(value) for key, value in output.items()}
    return output


def _columns(dataset) -> list:
    if isinstance(dataset, Mapping):
        return list(dataset)
    if hasattr(dataset, "column_names"):
        return list(dataset.column_names)
    raise TypeError(
        f"prepare_tf_dataset needs a datasets.Dataset or a {{column: values}} mapping, got {type(dataset).__name__}"
    )


def _rows(dataset, keep) -> list:
    if isinstance(dataset, Mapping):
        count = {len(dataset[c]) for c in keep}
        if len(count) != 1:
            raise ValueError(f"prepare_tf_dataset: the columns have different lengths {sorted(count)}")
        return [{c: dataset[c][i] for c in keep} for i in range(count.pop())]
    return [{c: row[c] for c in keep} for row in dataset]


def _collate(collate_fn, collate_fn_args, tokenizer):
    if collate_fn is not None:
        return functools.partial(collate_fn, **(collate_fn_args or {}))
    if tokenizer is not None:
        return lambda rows: tokenizer.pad(rows, return_tensors="np")
    return lambda rows: {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _as_numpy(batch) -> dict:
    return {k: np.asarray(v) for k, v in dict(batch).items()}


class TFCLIPPreTrainedModel(TFPreTrainedSurface, surface.PretrainedFiles, keras.Model):
    """Config handling, initialization, Keras serialization, training, from_pretrained/save_pretrained;
    transformers' TFPreTrainedModel surface in the mixin above."""

    config_class: type[AnyCLIPConfig] = CLIPConfig
    loading_module = "clip.tf.loading"
    canonical_class = "CLIPModel"  # its name in clip.common.weights and in transformers' PyTorch
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config: Any, **kwargs: Any):  # ours, a dict of its fields or transformers' config
        super().__init__(**kwargs)
        self.config = self._take_config(config)

    def _finish_init(self):
        self.build()
        if not _LOADING.get():  # from_pretrained overwrites every weight it has; it draws only the rest
            self.init_weights()

    def build(self, input_shape=None):
        for sub in self._layers:
            sub.build(input_shape)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(cls.config_class.from_dict(config.pop("config")), **config)

    def get_build_config(self):
        return None  # every weight's shape follows from the config: built in __init__

    # -- weights by canonical name ------------------------------------------------------------------
    def canonical_variables(self) -> dict:
        """{canonical name: (Keras variable, leaf kind)} in the order of clip.common.weights."""
        out = {}
        for name, (_, kind) in weights.expected_parameters(self.config, self.canonical_class).items():
            obj = self
            for part in weights.backend_name(name, kind, "tf").split("."):
                obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
            out[name] = (obj, kind)
        return out

    def init_weights(self, names=None, seed=None):
        """transformers' CLIP initialization for all or some weights: the arrays of the parameter table
        (clip.common.params.init_arrays), drawn in numpy from `seed` (an int or a numpy Generator).
        Without a seed, TensorFlow's random state picks it, so keras.utils.set_random_seed(s) before the
        constructor keeps a model reproducible."""
        variables = self.canonical_variables()
        chosen = list(variables) if names is None else list(names)
        if not chosen:
            return
        if seed is None:
            seed = int(tf.random.uniform((), 0, 2**31 - 1, dtype=tf.int64))
        table = params.parameter_table(self.config, self.canonical_class)
        for name, array in params.init_arrays(table, seed, chosen).items():
            variable, kind = variables[name]
            variable.assign(tf.cast(weights.to_backend_layout(array, kind, "tf"), variable.dtype))

    # -- gradient checkpointing (PyTorch's surface; each encoder layer through tf.recompute_grad) ----------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(layer, "gradient_checkpointing", False) for layer in self._flatten_layers())

    def _set_gradient_checkpointing(self, enabled):
        for layer in self._flatten_layers():
            if hasattr(layer, "gradient_checkpointing"):
                layer.gradient_checkpointing = enabled
