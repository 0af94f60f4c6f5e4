"""`--zero-shot-eval DIR`: zero-shot top-1 on a labelled image folder during training.

DIR holds one sub-folder per class (an ImageFolder); each class becomes the prompt "a photo of a
{name}." (underscores read as spaces). The task has the same shape as the built-in ones,
(images, label texts, target index per image), so every backend evaluates it with
clip.train.common.evaluate_with. `clip eval-zero-shot` (clip.tasks) is the full evaluator with
prompt ensembles; this reader is the small piece training needs and can hand over to it.
"""

from __future__ import annotations

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PROMPT = "a photo of a {}."


def folder_task(directory: str, max_per_class: int | None = None) -> tuple[list, list[str], list[int]]:
    """(RGB images, one prompt per class, the class index of each image) from an ImageFolder."""
    from PIL import Image

    classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"--zero-shot-eval {directory}: needs at least two class sub-folders, found {len(classes)}")
    images, targets = [], []
    for index, name in enumerate(classes):
        folder = os.path.join(directory, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(folder, f)))  # regular files only: a FIFO would block
        for file in files[:max_per_class]:
            path = os.path.join(folder, file)
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except (OSError, ValueError) as err:
                raise ValueError(f"--zero-shot-eval: {path} is not a readable image ({err})") from None
            targets.append(index)
    if not images:
        raise ValueError(f"--zero-shot-eval {directory}: no images in its class sub-folders")
    return images, [PROMPT.format(name.replace("_", " ")) for name in classes], targets
