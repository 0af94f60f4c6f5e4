"""A deterministic captioned dataset of coloured shapes, rendered on the fly from an index.

Item i of `SyntheticShapes(n, seed)` is always the same image and caption: everything about it is
drawn from `numpy.random.default_rng([seed, i])`, so no files are needed and any worker process
can render any item. Scenes hold one shape ("a red circle", "a small blue square") or two
("a small red triangle above a large blue circle") on a grey textured background (noise, stripes,
checks), so that colour words name the shapes and never the background.

Colour x shape combinations in `HELD_OUT_COMBOS` are left out of the training scenes by default;
`zero_shot_set` renders single shapes of any combination to measure zero-shot accuracy on seen
and on never-seen combinations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from clip.errors import InputError

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 215, 30),
    "purple": (145, 45, 190),
    "orange": (250, 135, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
# One combination per shape and per colour (orange keeps all five), so every word is still seen.
HELD_OUT_COMBOS = (
    ("red", "cross"),
    ("green", "star"),
    ("blue", "triangle"),
    ("yellow", "square"),
    ("purple", "circle"),
)
BACKGROUNDS = ("noise", "stripes", "checks", "plain")

_SUPERSAMPLE = 2  # draw at twice the size and downsample: smooth edges at small image sizes

# Shape radii as a fraction of the image side, per size word (each drawn x uniform(0.9, 1.1)):
# single-shape scenes (and zero_shot_set) and two-shape scenes.
SINGLE_RADIUS = {"small": 0.2, "large": 0.34}
PAIR_RADIUS = {"small": 0.11, "large": 0.19}
# Single shapes are centred within this distance of the middle of the image (and kept inside it).
SINGLE_SPREAD = 0.5


def zero_shot_labels(
    colours: Iterable[str] = tuple(COLOURS), shapes: Iterable[str] = SHAPES
) -> tuple[list[str], list[tuple[str, str]]]:
    """The colour x shape label texts ("a red circle", ...) and their (colour, shape) pairs."""
    combos = [(c, s) for c in colours for s in shapes]
    return [f"a {c} {s}" for c, s in combos], combos


class SyntheticShapes:
    """`size` captioned images; item i -> (PIL RGB image, caption), deterministic in (seed, i).

    two_shape_fraction: share of two-shape scenes; exclude: (colour, shape) pairs never drawn.
    """

    def __init__(
        self,
        size: int = 10000,
        seed: int = 0,
        image_size: int = 64,
        two_shape_fraction: float = 0.3,
        exclude: Iterable[tuple[str, str]] | None = HELD_OUT_COMBOS,
    ) -> None:
        if size <= 0:
            raise InputError(f"SyntheticShapes needs a positive size, got {size}")
        if image_size < 16:
            raise InputError(f"SyntheticShapes renders at least 16x16 pixels, got image_size={image_size}")
        self.size, self.seed, self.image_size = int(size), int(seed), int(image_size)
        self.two_shape_fraction = float(two_shape_fraction)
        self.exclude = frozenset(tuple(c) for c in (exclude or ()))
        self.combos = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in self.exclude]
        if not self.combos:
            raise InputError("SyntheticShapes: every colour x shape combination is excluded")

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        scene = self.scene(index)
        return render(scene, self.image_size), scene["caption"]

    def scene(self, index: int) -> dict:
        """The description of item `index`: shapes, background and caption."""
        rng = np.random.default_rng([self.seed, int(index)])
        background = _background_spec(rng)
        if rng.random() >= self.two_shape_fraction:
            colour, shape = self.combos[rng.integers(len(self.combos))]
            size = SIZES[rng.integers(2)]
            item = _single_shape(rng, colour, shape, size)
            caption = f"a {size} {colour} {shape}" if rng.random() < 0.5 else f"a {colour} {shape}"
            return {"shapes": [item], "background": background, "caption": caption}
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        first, second = (self.combos[j] for j in rng.choice(len(self.combos), 2, replace=False))
        sizes = [SIZES[rng.integers(2)] for _ in range(2)]
        radii = [PAIR_RADIUS[s] * rng.uniform(0.9, 1.1) for s in sizes]
        along = [0.27 + rng.uniform(-0.03, 0.03), 0.73 + rng.uniform(-0.03, 0.03)]  # first shape, second shape
        if relation in ("right of", "below"):
            along.reverse()
        across = [rng.uniform(0.35, 0.65) for _ in range(2)]
        xy = list(zip(along, across)) if relation in ("left of", "right of") else list(zip(across, along))
        items = [_shape(rng, c, s, z, r, x, y) for (c, s), z, r, (x, y) in zip((first, second), sizes, radii, xy)]
        caption = f"a {sizes[0]} {first[0]} {first[1]} {relation} a {sizes[1]} {second[0]} {second[1]}"
        return {"shapes": items, "background": background, "caption": caption}


def zero_shot_set(
    count: int, seed: int = 12345, image_size: int = 64, combos: Iterable[tuple[str, str]] | None = None
) -> tuple[list[Image.Image], list[str], np.ndarray]:
    """`count` single-shape images cycling over `combos` (default: all colour x shape pairs).

    Returns (images, labels, targets): the label texts of *all* colour x shape pairs and, per
    image, the index of its label among them.
    """
    labels, all_combos = zero_shot_labels()
    combos = list(all_combos if combos is None else combos)
    images, targets = [], []
    for i in range(count):
        colour, shape = combos[i % len(combos)]
        rng = np.random.default_rng([seed, i])
        size = SIZES[rng.integers(2)]
        item = _single_shape(rng, colour, shape, size)
        images.append(render({"shapes": [item], "background": _background_spec(rng)}, image_size))
        targets.append(all_combos.index((colour, shape)))
    return images, labels, np.asarray(targets)


# -- scene parts --------------------------------------------------------------------------------
def _single_shape(rng, colour, shape, size) -> dict:
    radius = SINGLE_RADIUS[size] * rng.uniform(0.9, 1.1)
    low, high = max(radius + 0.03, 0.5 - SINGLE_SPREAD), min(1 - radius - 0.03, 0.5 + SINGLE_SPREAD)
    return _shape(rng, colour, shape, size, radius, rng.uniform(low, high), rng.uniform(low, high))


def _shape(rng, colour, shape, size, radius, x, y) -> dict:
    jitter = rng.integers(-18, 19, size=3)
    rgb = tuple(int(v) for v in np.clip(np.asarray(COLOURS[colour]) + jitter, 0, 255))
    return {
        "colour": colour,
        "shape": shape,
        "size": size,
        "rgb": rgb,
        "radius": float(radius),
        "x": float(x),
        "y": float(y),
        "angle": float(rng.uniform(-0.3, 0.3)),
    }


def _background_spec(rng) -> dict:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    low, high = sorted(int(v) for v in rng.integers(70, 200, size=2))
    return {
        "kind": kind,
        "low": low,
        "high": max(high, low + 25),
        "period": int(rng.integers(3, 9)),
        "vertical": bool(rng.integers(2)),
        "noise_seed": int(rng.integers(2**31)),
    }


def _background(spec, size) -> np.ndarray:
    """Grey texture, (size, size, 3) uint8."""
    low, high = spec["low"], spec["high"]
    if spec["kind"] == "noise":
        grey = np.random.default_rng(spec["noise_seed"]).integers(low, high + 1, size=(size, size))
    else:
        coords = np.arange(size)
        band = (coords // (spec["period"] * _SUPERSAMPLE)) % 2
        if spec["kind"] == "stripes":
            grey = np.broadcast_to(band[None, :] if spec["vertical"] else band[:, None], (size, size))
        elif spec["kind"] == "checks":
            grey = band[None, :] ^ band[:, None]
        else:
            grey = np.zeros((size, size), dtype=np.int64)
        grey = np.where(grey > 0, high, low) if spec["kind"] != "plain" else np.full((size, size), (low + high) // 2)
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def _polygon(shape, cx, cy, r, angle):
    if shape == "square":
        points = [(math.pi / 4 + k * math.pi / 2, r * 0.9) for k in range(4)]
    elif shape == "triangle":
        points = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
        cy += 0.2 * r
    elif shape == "star":
        points = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    else:  # cross: a plus sign of arm half-width w
        w = 0.33 * r
        corners = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        points = [(math.atan2(py, px), math.hypot(px, py)) for px, py in corners]
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for a, d in points]


def render(scene: dict, image_size: int = 64) -> Image.Image:
    """Draw a scene description (see SyntheticShapes.scene) as an RGB image."""
    big = image_size * _SUPERSAMPLE
    canvas = Image.fromarray(_background(scene["background"], big))
    draw = ImageDraw.Draw(canvas)
    for item in scene["shapes"]:
        cx, cy, r = item["x"] * big, item["y"] * big, item["radius"] * big
        if item["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=item["rgb"])
        else:
            draw.polygon(_polygon(item["shape"], cx, cy, r, item["angle"]), fill=item["rgb"])
    return canvas.reduce(_SUPERSAMPLE)
