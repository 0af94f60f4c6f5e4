"""The base of the PyTorch models: CLIPPreTrainedModel, over transformers' PreTrainedModel surface (one mixin).

The framework-neutral parts (config conversion, output-flag defaults, attention implementation
names, parameter counting rules) come from clip.common.surface; this file holds only what touches
torch modules. Loading and saving stay in clip.pt.loading; the public model classes in clip.pt.modeling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn

from clip.common import params, surface
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.pt.layers import CLIPEncoder

# the config of any of the model classes: the joint one or one tower's
AnyCLIPConfig = CLIPConfig | CLIPTextConfig | CLIPVisionConfig

# PyTorch runs both: "sdpa" torch's fused scaled_dot_product_attention, "eager" the explicit
# softmax (transformers' eager path); "flash_attention_2" is accepted as sdpa, which picks torch's
# flash kernel itself where the device has one.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")

# from_pretrained returns the class it is called on
ModelT = TypeVar("ModelT", bound="CLIPPreTrainedModel")


class PreTrainedSurface(surface.ConfigSurface):
    """Mixed into an nn.Module whose subclasses set config_class (and main_input_name)."""

    # what the mixin reads from the model it is mixed into: set by CLIPPreTrainedModel ...
    config: AnyCLIPConfig
    config_class: type[AnyCLIPConfig]
    # ... and provided by nn.Module (annotations only: the lookup still reaches nn.Module's methods)
    named_modules: Callable[[], Iterator[tuple[str, nn.Module]]]
    named_parameters: Callable[[], Iterator[tuple[str, nn.Parameter]]]
    parameters: Callable[[], Iterator[nn.Parameter]]

    base_model_prefix = "clip"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = False  # transformers: True for the vision classes only
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules: list[str] | None = ["CLIPEncoderLayer"]

    # -- class-level facts ------------------------------------------------------------------------

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True

    @classmethod
    def _from_config(cls, config, attn_implementation=None, dtype=None, torch_dtype=None, **kwargs):
        """A randomly initialized model, as transformers' _from_config (the Auto classes' from_config)."""
        from clip.pt.loading import resolve_dtype

        if kwargs:
            raise TypeError(f"{cls.__name__}._from_config got unexpected arguments {sorted(kwargs)}")
        config = surface.as_config(config, cls.config_class, cls.__name__)
        if attn_implementation is not None:
            surface.check_attn_implementation(attn_implementation, cls.__name__, ATTN_IMPLEMENTATIONS)
            config._attn_implementation = attn_implementation
        model = cls(config)
        wanted = resolve_dtype(dtype if dtype is not None else torch_dtype)
        return model.to(wanted) if isinstance(wanted, torch.dtype) else model

    def post_init(self):
        """transformers' hook after __init__; our constructors already initialize the weights."""

    def tie_weights(self):
        """Nothing to tie: CLIP has no output embeddings."""

    # -- parameters -------------------------------------------------------------------------------
    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        embeddings = {f"{name}.weight" for name, module in self.named_modules() if isinstance(module, nn.Embedding)}
        entries = [(p.numel(), p.requires_grad, name in embeddings) for name, p in self.named_parameters()]
        return surface.count_parameters(entries, only_trainable, exclude_embeddings)

    def get_input_embeddings(self):
        raise NotImplementedError(
            f"{type(self).__name__} has no single input embedding (as in transformers); "
            "use the tower's: model.text_model.embeddings.token_embedding"
        )

    def set_input_embeddings(self, value):
        raise NotImplementedError(f"{type(self).__name__} has no input embedding to replace (as in transformers)")

    @property
    def dummy_inputs(self) -> dict:
        """A tiny batch of the main input (transformers' PyTorch models give token ids)."""
        if self.main_input_name == "pixel_values":
            # pixel_values is the main input of the vision models and of CLIPForImageClassification
            vision = cast(CLIPVisionConfig, getattr(self.config, "vision_config", self.config))
            return {"pixel_values": torch.ones(1, vision.num_channels, vision.image_size, vision.image_size)}
        return {"input_ids": torch.tensor([[3, 4, 5, 2], [6, 7, 2, 1]])}

    def get_output_embeddings(self):
        return None

    def get_position_embeddings(self):
        raise NotImplementedError(
            f"get_position_embeddings is not implemented for {type(self).__name__} (as in transformers)"
        )

    def resize_position_embeddings(self, new_num_position_embeddings: int):
        # transformers' CLIP raises the same; for images, interpolate_pos_encoding=True resizes per call
        raise NotImplementedError(
            f"resize_position_embeddings is not implemented for {type(self).__name__} (as in "
            "transformers); pass interpolate_pos_encoding=True for other image sizes"
        )

    # -- attention --------------------------------------------------------------------------------
    def set_attn_implementation(self, attn_implementation):
        """Switch every attention layer to "eager" or "sdpa" (a dict: per sub-config, "" for the model)."""
        surface.check_attn_implementation(attn_implementation, type(self).__name__, ATTN_IMPLEMENTATIONS)
        self.config._attn_implementation = attn_implementation

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class CLIPPreTrainedModel(PreTrainedSurface, surface.PretrainedFiles, nn.Module):
    """Config handling, initialization, gradient checkpointing, from_pretrained/save_pretrained;
    transformers' PreTrainedModel surface in the mixin above."""

    config_class: type[AnyCLIPConfig] = CLIPConfig
    loading_module = "clip.pt.loading"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config: Any):  # ours, a dict of its fields or transformers' config: converted
        super().__init__()
        self.config = self._take_config(config)

    def init_weights(self, names=None, seed=None):
        """transformers' CLIP initialization for all or some parameters: the arrays of the parameter
        table (clip.common.params.init_arrays), drawn in numpy from `seed` (an int or a numpy
        Generator). Without a seed, torch's generator picks it, so torch.manual_seed(s) before the
        constructor keeps a model reproducible."""
        from clip.common.loading import canonical_class

        table = params.parameter_table(self.config, canonical_class(type(self)))
        own = dict(self.named_parameters())
        chosen = list(table) if names is None else list(names)
        if not chosen or all(own[name].is_meta for name in chosen):
            return  # nothing to draw (from_pretrained builds on the meta device, then fills what it lacks)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        with torch.no_grad():
            for name, array in params.init_arrays(table, seed, chosen).items():
                own[name].copy_(torch.from_numpy(array))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, CLIPEncoder))

    def _set_gradient_checkpointing(self, enabled):
        for module in self.modules():
            if isinstance(module, CLIPEncoder):
                module.gradient_checkpointing = enabled
