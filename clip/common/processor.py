"""CLIPProcessor: the tokenizer and the image processor behind one call, as in transformers.

Saved processors use transformers' layout (4.57): preprocessor_config.json plus the tokenizer's
files, both tagged with processor_class "CLIPProcessor"; no processor_config.json, because
transformers writes one only for processors with settings of their own, which CLIP's has not.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from clip.common import hub
from clip.common.batch import BatchEncoding
from clip.common.image_processor import OPTIONS, PREPROCESS_KWARGS, CLIPImageProcessor
from clip.common.io import atomic_write_json, atomic_write_text, read_json_object
from clip.errors import InputError, InputTypeError

_TOKENIZER_CONFIG = "tokenizer_config.json"


def _default_tokenizer_class(use_fast: bool):
    from clip.common import tokenizer

    return tokenizer.CLIPTokenizerFast if use_fast else tokenizer.CLIPTokenizer


class CLIPProcessor:
    """Tokenizes text and preprocesses images for CLIP.

    Defaults: CLIPImageProcessor() and CLIPTokenizerFast() (the embedded CLIP vocabulary), the
    tokenizer transformers' AutoTokenizer would pick.
    """

    attributes = ["image_processor", "tokenizer"]
    optional_attributes = ["chat_template"]
    # The class names transformers' AutoProcessor resolves these attributes with.
    image_processor_class = ("CLIPImageProcessor", "CLIPImageProcessorFast")
    feature_extractor_class = image_processor_class
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        image_processor: CLIPImageProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "feature_extractor" in kwargs:
            warnings.warn(
                "the feature_extractor argument is deprecated; pass image_processor", FutureWarning, stacklevel=2
            )
            feature_extractor = kwargs.pop("feature_extractor")
            image_processor = feature_extractor if image_processor is None else image_processor
        if kwargs:
            raise InputTypeError(f"CLIPProcessor got unexpected keyword arguments {sorted(kwargs)}")
        self.image_processor = CLIPImageProcessor() if image_processor is None else image_processor
        self.tokenizer = _default_tokenizer_class(True)() if tokenizer is None else tokenizer
        self.chat_template = chat_template

    @property
    def feature_extractor(self) -> CLIPImageProcessor:
        warnings.warn("feature_extractor is deprecated; use image_processor", FutureWarning, stacklevel=2)
        return self.image_processor

    def to_dict(self) -> dict:
        """The processor's own settings (CLIP's has none beyond its class and chat template)."""
        data = {"processor_class": type(self).__name__}
        if self.chat_template is not None:
            data["chat_template"] = self.chat_template
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        atomic_write_text(os.fspath(json_file_path), self.to_json_string())

    def apply_chat_template(self, conversation: list, chat_template: str | None = None, **kwargs: Any) -> Any:
        """Render a conversation with the processor's (or the given) Jinja template, as the tokenizer does."""
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise InputError(
                "Cannot use apply_chat_template because this processor does not have a chat template "
                "(CLIP ships none); pass chat_template=..."
            )
        return self.tokenizer.apply_chat_template(conversation, chat_template=template, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        return_tensors: str | None = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Text -> input_ids and attention_mask; images -> pixel_values; both -> all three.

        Image options (do_resize, size, crop_size, ...) go to the image processor, any other
        keyword argument to the tokenizer.
        """
        if text is None and images is None:
            raise InputError("CLIPProcessor needs text, images or both; got neither")
        if text is not None and not _is_text(text):
            raise InputError(
                f"text must be a string or a list of strings, got {type(text).__name__}; pass images with images=..."
            )
        image_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in PREPROCESS_KWARGS}
        out = BatchEncoding()
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors, **image_kwargs))
        if text is not None:
            out.update(
                self.tokenizer(
                    text,
                    return_tensors=return_tensors,
                    padding=padding,
                    truncation=truncation,
                    max_length=max_length,
                    **kwargs,
                )
            )
        return out

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = self.image_processor.model_input_names + self.tokenizer.model_input_names
        return list(dict.fromkeys(names))

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise InputError(f"{save_directory} is a file; save_pretrained needs a directory")
        # transformers tags both configs so that AutoProcessor finds this class again.
        self.image_processor.processor_class = type(self).__name__
        paths = list(self.image_processor.save_pretrained(save_directory))
        paths += list(self.tokenizer.save_pretrained(save_directory))
        config_path = os.path.join(save_directory, _TOKENIZER_CONFIG)
        if os.path.isfile(config_path):
            config = read_json_object(config_path)
            config["processor_class"] = type(self).__name__
            atomic_write_json(config_path, config)
        return paths

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, use_fast: bool = True, **kwargs: Any) -> CLIPProcessor:
        """Load from a directory or hub id holding preprocessor_config.json and tokenizer files.

        Hub arguments (revision, cache_dir, token, ...) apply to both; image options override the
        image processor's config and any other keyword argument the tokenizer's.
        """
        hub_kwargs = hub.split_hub_kwargs(kwargs)
        image_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in OPTIONS}
        image_processor = CLIPImageProcessor.from_pretrained(name_or_path, **hub_kwargs, **image_kwargs)
        tokenizer = _default_tokenizer_class(use_fast).from_pretrained(name_or_path, **hub_kwargs, **kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def __repr__(self):
        return f"{type(self).__name__}(image_processor={self.image_processor!r}, tokenizer={self.tokenizer!r})"


def _is_text(text) -> bool:
    if isinstance(text, str):
        return True
    return isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)
