"""Prompt templates for zero-shot classification.

A template is a string with one `{}` where the label goes: "a photo of a {}." + "dog" ->
"a photo of a dog.". `IMAGENET_TEMPLATES` is the 80-prompt ensemble the CLIP paper used for
ImageNet (Radford et al. 2021, section 3.1.4 and its prompt-engineering notebook);
`SIMPLE_TEMPLATES` is the paper's single default prompt; `LABEL_TEMPLATES` uses the label as is;
`DEFAULT_TEMPLATES` is the default of transformers' zero-shot-image-classification pipeline
("This is a photo of {}."), and ours, so that both give the same probabilities on the same model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from clip.common.io import read_text
from clip.errors import InputError

LABEL_TEMPLATES = ("{}",)
DEFAULT_TEMPLATES = ("This is a photo of {}.",)
SIMPLE_TEMPLATES = ("a photo of a {}.",)
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

NAMED = {
    "default": DEFAULT_TEMPLATES,
    "label": LABEL_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
}


def get_templates(spec: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Templates from a name ("default", "label", "simple", "imagenet"), a file (one per line), one
    template string containing "{}", or a list of templates. None means "default" (transformers'
    pipeline prompt); "label" uses the labels verbatim (for models trained on bare labels)."""
    if spec is None:
        return DEFAULT_TEMPLATES
    if isinstance(spec, str):
        if spec in NAMED:
            return NAMED[spec]
        if os.path.isfile(spec):
            lines = read_text(spec).split("\n")  # not UTF-8: an error naming the file and line
            templates = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            where = spec
        elif "{}" in spec:
            templates, where = [spec], "template"
        else:
            raise InputError(
                f"templates {spec!r}: not one of {', '.join(NAMED)}, not a file, and no '{{}}' placeholder in it"
            )
    else:
        templates, where = [str(t) for t in spec], "templates"
    if not templates:
        raise InputError(f"{where}: no templates given")
    for template in templates:
        if template.count("{}") != 1:
            raise InputError(f"{where}: template {template!r} must contain exactly one '{{}}' where the label goes")
    return tuple(templates)


def fill(template: str, label: str) -> str:
    """The prompt for `label` (plain replacement: braces inside labels are kept as they are)."""
    return template.replace("{}", label)
