"""`--zero-shot-eval SOURCE`: zero-shot top-1 on labelled images during training.

SOURCE is read by the reader of `clip eval-zero-shot` (clip.tasks.eval_zero_shot_data.open_labelled):
a folder of class sub-folders, a CSV/JSONL table of (image, label), or webdataset shards with a
label field. Each class becomes one prompt of `clip zero-shot`'s default template (transformers'
pipeline prompt, "This is a photo of {}."). The task has the same shape as the built-in ones
(images, label texts, target index per image), so every backend evaluates it with
clip.train.loop.evaluate_with; `clip eval-zero-shot` on the trained model gives the same top-1
with the same template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast


def folder_task(source: str, max_per_class: int | None = None) -> tuple[list[Any], list[str], list[int]]:
    """(RGB images, one prompt per class, the class index of each image) from labelled images."""
    from clip.tasks.backends import TaskError
    from clip.tasks.embed import load_image
    from clip.tasks.eval_zero_shot_data import open_labelled
    from clip.tasks.templates import DEFAULT_TEMPLATES

    try:
        data = open_labelled(source)
        if len(data.classnames) < 2:
            raise TaskError(f"{source}: needs at least two classes, found {len(data.classnames)}")
        images: list[Any] = []  # PIL images
        targets: list[int] = []
        per_class: dict[int, int] = {}
        # LabelledImages declares `samples` as object (it is a callable returning an iterable of samples)
        samples = cast(Callable[[], Iterable[tuple[str, Any, Any]]], data.samples)
        for name, image, label in samples():
            if image is None:  # a sample the reader could not use: `label` holds why
                raise TaskError(f"{name}: {label}")
            if max_per_class is not None and per_class.get(label, 0) >= max_per_class:
                continue
            try:
                images.append(load_image(image))
            except ValueError as err:
                raise TaskError(f"{name} is not a readable image ({err})") from None
            targets.append(label)
            per_class[label] = per_class.get(label, 0) + 1
    except TaskError as err:
        raise ValueError(f"--zero-shot-eval: {err}") from None
    if not images:
        raise ValueError(f"--zero-shot-eval {source}: no labelled images")
    template = DEFAULT_TEMPLATES[0]
    return images, [template.format(name) for name in data.classnames], targets
