"""Reading and writing tokenizer files the way transformers does, and chat templates.

Files: vocab.json + merges.txt (both tokenizers), tokenizer.json (fast), tokenizer_config.json,
special_tokens_map.json and, when a chat template is set, chat_template.jinja (or the template
inside tokenizer_config.json with save_jinja_files=False, transformers' older layout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from clip.errors import InputError

from . import _bpe
from ._tokenizer_vocab import CLIP_TOKEN_NAMES, SPECIAL_TOKEN_NAMES, VocabularyMixin
from .batch import BatchEncoding
from .hub import resolve_file, split_hub_kwargs
from .io import atomic_write_json, atomic_write_text, read_json_object

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# The tokenizer_config.json keys the constructors take; the rest (tokenizer_class,
# added_tokens_decoder, ...) describe what the constructors already do.
CONFIG_KEYS = (
    *SPECIAL_TOKEN_NAMES,
    "additional_special_tokens",
    "model_max_length",
    "clean_up_tokenization_spaces",
    "errors",
    "padding_side",
    "truncation_side",
    "chat_template",
)


def _token_value(value):
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    if isinstance(value, list):
        return [_token_value(v) for v in value]
    return value


class FilesMixin(VocabularyMixin):
    """from_pretrained / save_pretrained / save_vocabulary and apply_chat_template.

    It saves the vocabulary (VocabularyMixin, its base) and the settings that the
    tokenizer sets in CLIPTokenizerBase._setup, declared here for the type checker.
    """

    clean_up_tokenization_spaces: bool
    errors: str  # how invalid UTF-8 decodes (bytes.decode's errors)
    model_max_length: int
    padding_side: str
    truncation_side: str
    chat_template: str | None
    __call__: Callable[..., BatchEncoding]  # CLIPTokenizerBase.__call__: apply_chat_template tokenizes with it

    def _merges(self) -> list:
        raise NotImplementedError  # the BPE merges: each tokenizer (slow, fast) keeps them its own way

    @classmethod
    def from_pretrained(cls, name_or_path, *init_inputs, **kwargs):
        """Load from a local directory or hub id (tokenizer_config.json, special_tokens_map.json and
        chat_template.jinja are optional). Keyword arguments override the saved configuration."""
        hub = split_hub_kwargs(kwargs)
        settings, added = {}, {}
        for filename in (CONFIG_FILE, SPECIAL_TOKENS_FILE):  # the special tokens map wins, as in transformers
            path = resolve_file(name_or_path, filename, required=False, **hub)
            if path is None:
                continue
            config = read_json_object(path)  # depth-limited, errors name the file
            for key in CONFIG_KEYS:
                if key in config:
                    settings[key] = _token_value(config[key])
            if isinstance(config.get("added_tokens_decoder"), dict):
                added = config["added_tokens_decoder"]
        template = resolve_file(name_or_path, CHAT_TEMPLATE_FILE, required=False, **hub)
        if template is not None:
            with open(template, encoding="utf-8") as f:
                settings["chat_template"] = f.read()
        if isinstance(settings.get("model_max_length"), float):
            settings["model_max_length"] = int(settings["model_max_length"])
        settings.update(kwargs)
        # Saved added tokens take their ids back first; additional special tokens are among them.
        additional = settings.pop("additional_special_tokens", None)
        tokenizer = cls(**cls._resolve_vocab_files(name_or_path, hub), **settings)
        tokenizer._restore_added_tokens(added)
        tokenizer.name_or_path = os.fspath(name_or_path)
        if additional:
            tokenizer.add_special_tokens({"additional_special_tokens": list(additional)})
        return tokenizer

    def _restore_added_tokens(self, saved: dict):
        """Tokens added before saving (tokenizer_config.json's added_tokens_decoder) get their ids back."""
        vocab = self.get_vocab()
        for key, entry in sorted(saved.items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else -1):
            content = entry.get("content") if isinstance(entry, dict) else None
            if not isinstance(content, str) or not str(key).isdigit():
                continue
            if content in vocab and vocab[content] != int(key):
                raise InputError(f"added token {content!r} has id {key} in the saved config but {vocab[content]} here")
            if content not in vocab or content not in self._added and content not in self.all_special_tokens:
                self.add_tokens([content], special_tokens=bool(entry.get("special")))
                if self._token_id(content) != int(key):
                    raise InputError(f"added token {content!r} was saved with id {key}, which is not the next free id")

    @classmethod
    def _resolve_vocab_files(cls, name_or_path, hub) -> dict:
        raise NotImplementedError

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
        push_to_hub: bool = False,
        save_jinja_files: bool = True,
        **kwargs: Any,
    ) -> tuple[str, ...]:
        """Write the files transformers' tokenizers load (vocab.json, merges.txt, tokenizer_config.json,
        special_tokens_map.json, chat_template.jinja when there is a template, and tokenizer.json
        for the fast tokenizer)."""
        if push_to_hub:
            raise NotImplementedError("push_to_hub is not supported; upload the saved directory yourself")
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"{save_directory} is a file; save_pretrained needs a directory")
        os.makedirs(save_directory, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        config_path = os.path.join(save_directory, prefix + CONFIG_FILE)
        special_path = os.path.join(save_directory, prefix + SPECIAL_TOKENS_FILE)
        special = set(self.all_special_tokens) | self._added_special
        added = {
            str(i): {
                "content": token,
                "lstrip": False,
                "normalized": token not in self._added_special,
                "rstrip": False,
                "single_word": False,
                "special": token in special,
            }
            for token, i in self.added_tokens_encoder.items()
        }
        roles = {name: getattr(self, name) for name in CLIP_TOKEN_NAMES}
        roles.update(
            {
                name: getattr(self, name)
                for name in SPECIAL_TOKEN_NAMES
                if name not in CLIP_TOKEN_NAMES and getattr(self, name) is not None
            }
        )
        config = {
            **roles,
            "added_tokens_decoder": added,
            "additional_special_tokens": self.additional_special_tokens,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": self.errors,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "tokenizer_class": type(self).__name__.removesuffix("Fast"),
        }
        written = []
        if self.chat_template is not None:
            if save_jinja_files:
                template_path = os.path.join(save_directory, prefix + CHAT_TEMPLATE_FILE)
                atomic_write_text(template_path, self.chat_template)
                written.append(template_path)
            else:
                config["chat_template"] = self.chat_template
        atomic_write_json(config_path, config)
        atomic_write_json(special_path, self.special_tokens_map)
        return (config_path, special_path, *written, *self.save_vocabulary(save_directory, filename_prefix))

    def save_vocabulary(self, save_directory, filename_prefix: str | None = None) -> tuple[str, ...]:
        save_directory = os.fspath(save_directory)
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"{save_directory} is not a directory")
        return _bpe.write_vocab_files(save_directory, self.encoder, self._merges(), filename_prefix)

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        add_generation_prompt=False,
        tokenize: bool = True,
        return_dict: bool = False,
        return_tensors=None,
        **kwargs,
    ):
        """Render a conversation with a Jinja chat template (needs jinja2), as transformers does.

        CLIP's tokenizers ship no template: pass `chat_template=` or set `tokenizer.chat_template`.
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise InputError(
                "Cannot use chat template functions because tokenizer.chat_template is not set and no template "
                "argument was passed: CLIP's tokenizers have none; pass chat_template=... or set "
                "tokenizer.chat_template"
            )
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise ImportError("apply_chat_template needs jinja2: pip install jinja2") from None
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
        env.globals["raise_exception"] = _raise_template_error
        compiled = env.from_string(template)
        texts = [
            compiled.render(
                messages=[dict(m) for m in chat],
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens_map,
                **kwargs,
            )
            for chat in conversations
        ]
        if not tokenize:
            return texts if batched else texts[0]
        out = self(texts if batched else texts[0], add_special_tokens=False, return_tensors=return_tensors)
        return out if return_dict else out["input_ids"]


def _raise_template_error(message):
    raise InputError(f"chat template error: {message}")
