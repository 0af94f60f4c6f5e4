"""Model output containers shared by every backend.

As in transformers, a field is reachable by attribute (`out.logits_per_image`), by key
(`out["logits_per_image"]`) and by position (`out[0]`), where positions and keys count only the
fields that are set (not None). `to_tuple()` gives the `return_dict=False` form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar


class ModelOutput:
    def _set_fields(self):
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def keys(self) -> list[str]:
        return [name for name, _ in self._set_fields()]

    def values(self) -> list:
        return [value for _, value in self._set_fields()]

    def items(self) -> list[tuple[str, Any]]:
        return self._set_fields()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._set_fields())

    def __contains__(self, key):
        return key in self.keys()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; set fields: {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())

    # TensorFlow's nest protocol, so tf.function can return outputs; plain methods, no TF import.
    def __tf_flatten__(self):
        return (), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def __tf_unflatten__(cls, metadata, components):
        return cls(*components)


OutputT = TypeVar("OutputT", bound=ModelOutput)  # the caller's own output class comes back


def as_requested(output: OutputT, return_dict: bool) -> OutputT | tuple:
    """What a public model call returns: the output itself, or with return_dict=False its
    to_tuple() form (transformers' rule, the same in every backend)."""
    return output if return_dict else output.to_tuple()


@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class CLIPTextModelOutput(ModelOutput):
    text_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class CLIPVisionModelOutput(ModelOutput):
    image_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclasses.dataclass
class CLIPOutput(ModelOutput):
    loss: Any = None
    logits_per_image: Any = None
    logits_per_text: Any = None
    text_embeds: Any = None
    image_embeds: Any = None
    text_model_output: Any = None
    vision_model_output: Any = None


@dataclasses.dataclass
class ImageClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Any = None
    attentions: Any = None
