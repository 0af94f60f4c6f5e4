"""Image x text cosine similarity, and its heatmap with image thumbnails and text labels.

The figure is the one of the CLIP notebook: one row per text, one column per image, each cell
coloured and printed with its cosine similarity, the images as thumbnails above their columns.
Its size in pixels is fixed by the layout (see `figure_pixels`), never by the text lengths.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from clip.tasks.backends import TaskError

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder

CELL = 96  # pixels per matrix cell (and per thumbnail)
LABEL_WIDTH = 320  # pixels left of the matrix for the text labels
COLORBAR_WIDTH = 96  # pixels right of the matrix for the colour bar
MARGIN = 24  # pixels below the matrix and above the thumbnails
DPI = 100


def similarity_matrix(
    encoder: Encoder, images: Sequence, texts: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, list, list[dict]]:
    """(cosine (I, T) float32, kept image names, skipped) for image paths/PIL images and strings."""
    from clip.tasks.embed import embed_images

    image_embeds = embed_images(encoder, images, batch_size=batch_size)
    text_embeds = encoder.embed_texts(list(texts))
    return image_embeds.vectors @ text_embeds.T, image_embeds.sources, image_embeds.skipped


def figure_pixels(n_images: int, n_texts: int, cell: int = CELL) -> tuple[int, int]:
    """(width, height) in pixels of the heatmap for n_images columns and n_texts rows."""
    width = LABEL_WIDTH + n_images * cell + COLORBAR_WIDTH
    height = MARGIN + cell + n_texts * cell + MARGIN  # thumbnails on top, the matrix below
    return width, height


def plot_similarity(
    similarity: ArrayLike, images: Sequence, texts: Sequence[str], out: str, cell: int = CELL, title: str | None = None
) -> str:
    """Write the heatmap of `similarity` (I, T) as a PNG at `out`; returns `out`.

    images: PIL images or paths (the thumbnails, in column order); texts: the row labels.
    """
    # a bare Figure renders with Agg when saved as PNG; pyplot (and its global backend) is never touched
    from matplotlib.figure import Figure
    from PIL import ImageOps

    from clip.common.io import atomic_path
    from clip.tasks.embed import load_image

    similarity = np.asarray(similarity, dtype=np.float32)
    n_images, n_texts = len(images), len(texts)
    if similarity.shape != (n_images, n_texts):
        raise TaskError(f"similarity has shape {similarity.shape}, expected ({n_images}, {n_texts})")
    if not n_images or not n_texts:
        raise TaskError("a similarity map needs at least one image and one text")
    width, height = figure_pixels(n_images, n_texts, cell)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    # axes positions in figure fractions, from the pixel layout
    left, matrix_w, matrix_h = LABEL_WIDTH / width, n_images * cell / width, n_texts * cell / height
    bottom = MARGIN / height
    heat = figure.add_axes((left, bottom, matrix_w, matrix_h))
    low, high = float(similarity.min()), float(similarity.max())
    if high - low < 1e-6:
        low, high = low - 0.05, high + 0.05
    shown = heat.imshow(
        similarity.T,
        cmap="viridis",
        vmin=low,
        vmax=high,
        aspect="auto",
        extent=(-0.5, n_images - 0.5, n_texts - 0.5, -0.5),
    )
    heat.set_xticks([])
    heat.set_yticks(range(n_texts))
    font = max(6, min(14, cell // 8))
    heat.set_yticklabels([_fit_label(t, LABEL_WIDTH, font) for t in texts], fontsize=font)
    for spine in heat.spines.values():
        spine.set_visible(False)
    middle = (low + high) / 2
    for i in range(n_images):
        for j in range(n_texts):
            value = similarity[i, j]
            heat.text(
                i,
                j,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=font,
                color="black" if value > middle else "white",
            )
    for i, image in enumerate(images):
        bottom = (height - MARGIN - cell) / height
        thumb = figure.add_axes((left + i * cell / width, bottom, cell / width, cell / height))
        thumb.imshow(np.asarray(ImageOps.fit(load_image(image), (cell, cell))), aspect="auto")  # centre square
        thumb.axis("off")
    bar = figure.add_axes(((LABEL_WIDTH + n_images * cell + 12) / width, bottom, 16 / width, matrix_h))
    colorbar = figure.colorbar(shown, cax=bar, format="%.2f")
    colorbar.ax.tick_params(labelsize=max(6, font - 3))
    if title:
        figure.suptitle(title, fontsize=font)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return out


def _fit_label(text: str, width_px: int, font_pt: int, lines: int = 2) -> str:
    """`text` wrapped to at most `lines` lines that fit in width_px (about 0.6 em per character)."""
    chars = max(8, int((width_px - 16) / (0.6 * font_pt * DPI / 72)))
    wrapped = textwrap.wrap(text, chars) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[: lines - 1] + [textwrap.shorten(" ".join(wrapped[lines - 1 :]), chars, placeholder="...")]
    return "\n".join(wrapped)
