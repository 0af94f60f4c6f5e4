"""transformers' PreTrainedModel surface for the PyTorch models, one mixin under CLIPPreTrainedModel.

The framework-neutral parts (config conversion, output-flag defaults, attention implementation
names, parameter counting rules) come from clip.common.surface; this file holds only what touches
torch modules. Loading and saving stay in clip.pt.loading.
"""

from __future__ import annotations

import torch
from torch import nn

from clip.common import surface

# PyTorch runs both: "sdpa" torch's fused scaled_dot_product_attention, "eager" the explicit
# softmax (transformers' eager path); "flash_attention_2" is accepted as sdpa, which picks torch's
# flash kernel itself where the device has one.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


class PreTrainedSurface(surface.ConfigSurface):
    """Mixed into an nn.Module whose subclasses set config_class (and main_input_name)."""

    base_model_prefix = "clip"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = False  # transformers: True for the vision classes only
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPEncoderLayer"]

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
            vision = getattr(self.config, "vision_config", self.config)
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
