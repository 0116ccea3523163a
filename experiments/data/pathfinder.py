"""Pathfinder (Linsley et al. 2018; Kim et al. 2020) as used by the Long Range Arena: are the two
marked dots joined by one dashed contour? Images are drawn here, 32 x 32, read as a sequence of 1,024
pixels, with a binary label (1: connected).

The drawing follows ``drewlinsley/pathfinder: snakes2.py`` / ``snakes.py`` step by step, with the
LRA Pathfinder32 settings (``google-research/long-range-arena: lra_benchmarks/data/pathfinder.py``,
the ``curv_contour_length_14`` set the S4 / S5 loaders train on) as defaults:
window 32, padding 1, antialias_scale 2, seed_distance 7, marker_radius 1.5, contour_length 14,
paddle_length 2, paddle_thickness 0.5, paddle_margin [1], continuity 1.0, distractor_length 14 // 3 = 4,
num_distractor_snakes 20 // 4 = 5, snake_contrast [2], paddle_contrast [0.75]; from
``snakes2_wrapper.py``: max_paddle_retrial 2, max_distractor_contour_retrial 4, no single-paddle
distractors. One image:

1. label ~ Bernoulli(1/2); two target snakes start from seeds ``seed_distance`` apart near the
   centre (the first seed keeps 2 * seed_distance from the border) and grow alternately paddle by
   paddle: each paddle (a short antialiased line) starts ``2 * margin`` past the previous one, turns
   by an angle drawn with weight cos(min(continuity * turn, pi / 2))^2 among free positions, and may
   not overlap the margin-dilated masks of the paddles drawn before it (else retried, then the
   whole pair is redrawn);
2. distractor snakes of ``distractor_length`` paddles are added where there is room;
3. a marker disc goes on the start of one target snake and on the end of the same snake (label 1)
   or of the other one (label 0); the image is rescaled to 0..255 as ``scipy.misc.imsave`` did.

Rendering is as the original: a paddle is drawn by PIL at ``antialias_scale`` times the resolution
and Lanczos-resized down; masks are dilations by a disc of radius ``margin`` (cv2.dilate written
out); the contrasts are the original's, so distractors (contrast 2) come out brighter than targets
(0.75 * 2). At 32 x 32 the window is crowded: a pair of target snakes is redrawn about 50 times
before one fits, as in the original.

Known pitfalls of the original generator, corrected here:

* It no longer runs: ``np.float``, ``np.round_`` and ``scipy.misc.imresize`` / ``imsave`` are gone
  from NumPy 2 and SciPy >= 1.3. Here: NumPy and PIL only, with the byte scaling written out.
* The released Pathfinder32 contains an empty image (``curv_baseline/imgs/0/sample_172.png``, which
  the S4 loader blacklists). Here samples live in memory and in an atomically written cache, and
  every sample is checked to hold its two markers and both full target snakes.
* The two target snakes are grown alternately, but the collision test of a new paddle of one snake
  ignored the other snake's newest paddle (each snake's last paddle joins the shared mask only one
  step later), and the second seed paddle was never tested against the first: the two targets
  could touch or cross, turning a negative sample into a visually connected one. Both are tested here.
* After the targets are grown only the second snake's last paddle was added to the mask, so
  distractors could be drawn across the end of the first target snake, where a marker may sit.
  Both last paddles are added here.
* A distractor's first paddle was placed by a free-pixel test alone (with a kernel one pixel off its
  anchor) and never tested for overlap, so distractors could start on a target contour (we measured
  about one image in five touching). It gets the overlap test of every other paddle here.

The random stream is NumPy's, per split and chunk of images (``split_rng(seed, split, chunk)``), so
the data does not depend on the number of worker processes. The LRA set has 200,000 images (S4 splits
it 160,000 / 20,000 / 20,000). ``features`` chooses the model input: "unit" (x / 255 in [0, 1], S4's
``configs/dataset/pathfinder.yaml``, center: false), "centered" ((x / 255 - 0.5) / 0.5, the S4 loader's
Normalize(0.5, 0.5)) or "tokens" (the byte 0..255 as a token, S4's tokenize).

Reading the LRA release instead (``path``): ``lra_release/pathfinder32/`` holds one folder per difficulty
(``curv_baseline``, ``curv_contour_length_9``, ``curv_contour_length_14``; LRA's TFDS builder
``lra_benchmarks/data/pathfinder.py`` names them easy / intermediate / hard, and the S4 loader
``state-spaces/s4: src/dataloaders/lra.py`` (``PathFinderDataset``) reads the last). In each,
``metadata/<batch>.npy`` files list the images, one per line, as fields separated by spaces (the rows
of ``accumulate_meta`` in ``drewlinsley/pathfinder: snakes2.py``): the image's folder (``imgs/<batch>``),
its file name (``sample_<i>.png``), the image's number, the label, then generator settings. As both
readers do, the image is ``<difficulty>/<field 0>/<field 1>`` and the label ``int(field 3)``; the
metadata files are read in the order of their numbers (S4), and empty image files are skipped (the
release's ``curv_baseline/imgs/0/sample_172.png``: S4 blacklists it, LRA filters images of length 0).
A metadata file saved by ``snakes.save_metadata`` itself (``np.save`` of the rows, binary despite the
same extension) is read too. Images are read with PIL in grayscale (``convert("L")``, as S4) and must
be ``window_size`` x ``window_size``. Neither reader's split can be replayed without its framework
(TFDS order, torch's ``random_split`` with seed 42), so the split is a permutation drawn from ``seed``:
``n_test`` images, then ``n_val`` (None: S4's 10% each), then ``n_train`` of the rest (None: all of it).
Only the chosen images are read; nothing is cached.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

from experiments.data import check_sizes, progress_bar
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays, split_rng
from experiments.errors import UserInputError

PATHFINDER_GENERATOR_VERSION = 1
CHUNK = 250              # images per random stream (and per task of a worker)
PARALLEL_MIN_IMAGES = 1000
FEATURES = ("unit", "centered", "tokens")
RELEASE_SUBSETS = ("curv_baseline", "curv_contour_length_9", "curv_contour_length_14")
S4_HELD_OUT = 0.1        # S4's val_split and test_split: the share of the images in each

logger = logging.getLogger(__name__)

__all__ = ["Pathfinder", "PathfinderSettings", "Sample", "pathfinder_folder_samples", "pathfinder_images",
           "pathfinder_sample", "read_pathfinder_images"]


@dataclasses.dataclass(frozen=True)
class PathfinderSettings:
    """Generator settings (defaults: LRA Pathfinder32); names as in ``snakes2_wrapper.py``."""

    window_size: int = 32
    padding: int = 1
    antialias_scale: int = 2
    seed_distance: int = 7
    marker_radius: float = 1.5
    contour_length: int = 14
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    paddle_margin: tuple[int, ...] = (1,)
    continuity: float = 1.0
    distractor_length: int = 4
    num_distractor_snakes: int = 5
    snake_contrast: tuple[float, ...] = (2.0,)
    paddle_contrast: tuple[float, ...] = (0.75,)
    max_paddle_retrial: int = 2
    max_distractor_contour_retrial: int = 4

    def __post_init__(self):
        if self.paddle_thickness * self.antialias_scale != round(self.paddle_thickness * self.antialias_scale):
            raise ValueError(f"paddle_thickness * antialias_scale must be an integer (the line width at the "
                             f"drawing resolution), got {self.paddle_thickness} * {self.antialias_scale}")
        if self.window_size <= 4 * self.seed_distance:
            raise ValueError(f"window_size={self.window_size} leaves no room for the first seed, which keeps "
                             f"2 * seed_distance = {2 * self.seed_distance} pixels from every border")
        if self.padding < 1:
            raise ValueError(f"padding={self.padding} must be >= 1")
        if not (self.paddle_margin and self.snake_contrast and self.paddle_contrast):
            raise ValueError("paddle_margin, snake_contrast and paddle_contrast must not be empty")
        if self.contour_length < 1 or self.paddle_length < 1 or self.distractor_length < 1:
            raise ValueError("contour_length, paddle_length and distractor_length must be >= 1")


@dataclasses.dataclass
class Sample:
    """One image (H, W) uint8, its label, and the record of what was drawn.

    ``snakes``: every contour drawn, targets first, each an (n, 2, 2) array of its paddles in path
    order, paddle k going from ``[k, 0]`` to ``[k, 1]`` ((row, col), pixels); ``markers``: the two
    marker centres (2, 2); ``marked``: which snake each marker sits on (the generator's claim).
    """

    image: np.ndarray
    label: int
    snakes: list[np.ndarray]
    markers: np.ndarray
    marked: tuple[int, int]


# -- drawing primitives -------------------------------------------------------------------------------

def bytescale(a: np.ndarray) -> np.ndarray:
    """scipy.misc.bytescale: linear map of [min, max] to [0, 255], rounded half up, as uint8."""
    a = np.asarray(a, np.float64)
    lo, hi = a.min(), a.max()
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    return (np.clip((a - lo) * scale, 0, 255) + 0.5).astype(np.uint8)


def lanczos_resize(a: np.ndarray, size: int) -> np.ndarray:
    """scipy.misc.imresize(a, (size, size), interp="lanczos") of a uint8 array (no rescaling) / float array."""
    if a.dtype != np.uint8:
        a = bytescale(a)
    return np.asarray(Image.fromarray(a, "L").resize((size, size), Image.LANCZOS))


@lru_cache(maxsize=64)
def disc(radius: int) -> np.ndarray:
    """snakes.generate_dilation_struct: (2r+1)^2 bool disc x^2 + y^2 <= r^2."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x**2 + y**2 <= radius**2


def dilate(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate with the kernel's non-zero taps and the centre anchor: out[p] = max a[p + tap - anchor]."""
    kh, kw = kernel.shape
    ay, ax = kh // 2, kw // 2
    h, w = a.shape
    padded = np.zeros((h + kh - 1, w + kw - 1), a.dtype)
    padded[ay:ay + h, ax:ax + w] = a
    out = np.zeros_like(a)
    for i, j in zip(*np.nonzero(kernel)):
        np.maximum(out, padded[i:i + h, j:j + w], out=out)
    return out


def translate(coord: Sequence[float], angle: float, dist: float) -> tuple[int, int]:
    """snakes.translate_coord: the point ``dist`` away along ``angle`` (radians; y = sin), ceil'd."""
    return (int(math.ceil(coord[0] + dist * math.sin(angle))), int(math.ceil(coord[1] + dist * math.cos(angle))))


def flip(angle: float) -> float:
    """snakes.flip_by_pi."""
    return angle + math.pi if angle < 0 else angle - math.pi


@lru_cache(maxsize=1 << 14)
def _paddle_sprite(angle: float, length: int, thickness: float, margin: int, aa: int):
    """The paddle and its mask drawn around a centre pixel: (2R+1)^2 float arrays in [0, 1], R = L + ceil(t) + m,
    and the drawn end's offset from the start in pixels. As snakes.draw_line_n_mask (before contrast)."""
    reach = length + int(math.ceil(thickness)) + margin
    big, small = 2 * reach * aa + 1, 2 * reach + 1
    centre = reach * aa
    head = translate((centre, centre), angle, length * aa)
    canvas = Image.new("F", (big, big), 0.0)
    ImageDraw.Draw(canvas).line([(centre, centre), (head[1], head[0])], fill=255.0,
                                width=int(round(thickness * aa)))
    blown = np.asarray(canvas, np.float32)
    line = lanczos_resize(blown, small).astype(np.float64) / 255.0
    mask = lanczos_resize(dilate(blown, disc(margin * aa)).astype(np.uint8), small).astype(np.float64) / 255.0
    end = ((head[0] - centre) * small / big, (head[1] - centre) * small / big)
    return line, mask, end


class Placed(NamedTuple):
    """A paddle placed in an image: the window ``(rows, cols)`` it covers and its line and mask there."""

    rows: slice
    cols: slice
    line: np.ndarray
    mask: np.ndarray
    end: tuple[float, float]

    def full(self, shape: tuple[int, int], which: str) -> np.ndarray:
        out = np.zeros(shape)
        out[self.rows, self.cols] = getattr(self, which)
        return out


def place_paddle(shape: tuple[int, int], start: Sequence[int], angle: float, s: PathfinderSettings, margin: int,
                 contrast: float = 1.0) -> Placed:
    """A paddle from integer pixel ``start`` along ``angle`` in an image of ``shape`` (clipped at its edges)."""
    line, mask, end = _paddle_sprite(float(angle), s.paddle_length, s.paddle_thickness, margin, s.antialias_scale)
    reach = line.shape[0] // 2
    y0, x0 = start[0] - reach, start[1] - reach
    rows = slice(max(y0, 0), max(min(y0 + line.shape[0], shape[0]), max(y0, 0)))
    cols = slice(max(x0, 0), max(min(x0 + line.shape[1], shape[1]), max(x0, 0)))
    sy, sx = slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0)
    return Placed(rows, cols, line[sy, sx] * contrast, mask[sy, sx], (start[0] + end[0], start[1] + end[1]))


def draw_paddle(shape: tuple[int, int], start: Sequence[int], angle: float, s: PathfinderSettings, margin: int,
                contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """snakes.draw_line_n_mask: (image, mask, end) of a paddle, as full images of ``shape``."""
    placed = place_paddle(shape, start, angle, s, margin, contrast)
    return placed.full(shape, "line"), placed.full(shape, "mask"), placed.end


def _collides(obstacles: np.ndarray, placed: Placed) -> bool:
    """The original's test ``max(mask + m_im) >= 1.8``, evaluated where the paddle's mask is."""
    return placed.mask.size > 0 and float(np.max(obstacles[placed.rows, placed.cols] + placed.mask)) >= 1.8


def _dilated_at(a: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int) -> np.ndarray:
    """``dilate(a, disc(radius))[rows, cols]`` without dilating the whole image."""
    h, w = a.shape
    padded = np.zeros((h + 2 * radius, w + 2 * radius))
    padded[radius:radius + h, radius:radius + w] = a
    dy, dx = np.nonzero(disc(radius))                                 # taps; the anchor is (radius, radius)
    return padded[rows[:, None] + dy[None, :], cols[:, None] + dx[None, :]].max(axis=1)


def draw_marker(size: int, centre: Sequence[int], radius: float, aa: int) -> np.ndarray:
    """snakes2.draw_circle: a disc drawn at ``aa`` times the resolution, Lanczos-resized, as float in [0, 1]."""
    y, x = np.ogrid[-centre[0] * aa:(size - centre[0]) * aa, -centre[1] * aa:(size - centre[1]) * aa]
    disc_image = (x**2 + y**2 <= (radius * aa) ** 2).astype(np.float64)
    return lanczos_resize(disc_image, size).astype(np.float64) / 255.0


def _out(p: Sequence[int], shape: tuple[int, int]) -> bool:
    return not (0 <= p[0] < shape[0] and 0 <= p[1] < shape[1])


def _free_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """snakes.find_available_coordinates(np.ceil(mask - 0.3)): pixels whose mask is <= 0.3."""
    return np.nonzero(mask <= 0.3)


# -- growing snakes ----------------------------------------------------------------------------------

class _Snake:
    """A contour being grown: its image, the mask of its newest paddle (not yet in the shared mask),
    the pivot and orientation the next paddle starts from, and its paddles in path order."""

    def __init__(self, image, last_mask, pivot, orientation, paddles):
        self.image, self.last_mask, self.pivot, self.orientation, self.paddles = (
            image, last_mask, pivot, orientation, paddles)


@lru_cache(maxsize=1 << 16)
def _circle_pixels(y: int, x: int, step: float, h: int, w: int):
    """Pixels (rows, cols) on the circle of radius ``step`` round (y, x) inside an h x w image, sampled
    every pixel of arc and truncated to integers, in (row, col) order as np.unique(coords, axis=0); their
    directions from the centre; the positions of the pixels on the circle as a (n, 2) array."""
    angles = np.arange(0, 360, 360.0 / (2 * step * math.pi)) * math.pi / 180
    ys, xs = y + step * np.sin(angles), x + step * np.cos(angles)
    inside = (ys < h) & (ys >= 0) & (xs < w) & (xs >= 0)
    flat = np.unique(ys[inside].astype(int) * w + xs[inside].astype(int))
    rows, cols = flat // w, flat % w
    return rows, cols, np.arctan2(rows - y, cols - x), np.stack([rows, cols], axis=1)


def _candidate_heads(pivot, orientation, step, obstacles, margin, continuity):
    """snakes.get_coords_cmf: pixels on the circle of radius ``step`` round ``pivot``, weighted by
    (1 - occupied) * cos(min(continuity * turn, pi/2))^2, where occupied is ``obstacles`` dilated by a
    disc of radius ``margin``; None if there is none."""
    rows, cols, orient, coords = _circle_pixels(int(pivot[0]), int(pivot[1]), float(step), *obstacles.shape)
    if len(rows) == 0:
        return None
    turn = np.abs(orient - orientation)
    turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * continuity, 0.5 * math.pi)
    pmf = (1 - _dilated_at(obstacles, rows, cols, margin)) * np.maximum(np.cos(turn), 0) ** 2
    total = pmf.sum()
    if total < 1e-4:
        return None
    return coords, orient, np.cumsum(pmf / total)


def _extend(rng, snake: _Snake, mask, obstacles, s: PathfinderSettings, margin, contrast):
    """snakes.extend_snake: add one paddle to ``snake``; returns the new shared mask or None on failure.

    ``obstacles`` (>= mask) is what the new paddle may not overlap: the shared mask plus the newest
    paddles of the other snakes growing at the same time (the correction of the original).
    """
    length = s.paddle_length
    pivot = translate(snake.pivot, snake.orientation, length + 2 * margin)
    found = _candidate_heads(pivot, snake.orientation, length + margin, obstacles, margin, s.continuity)
    if found is None:
        return None
    coords, orients, cmf = found
    for _ in range(s.max_paddle_retrial + 1):
        k = int(np.argmax(cmf - rng.random() > 0))
        head, orientation = (int(coords[k, 0]), int(coords[k, 1])), float(orients[k])
        placed = place_paddle(mask.shape, head, flip(orientation), s, margin, contrast)
        if not _collides(obstacles, placed):
            new_mask = np.maximum(mask, snake.last_mask)
            window = snake.image[placed.rows, placed.cols]
            np.maximum(window, placed.line, out=window)
            snake.last_mask, snake.pivot, snake.orientation = placed.full(mask.shape, "mask"), pivot, orientation
            snake.paddles.append((placed.end, head))
            return new_mask
    return None


def _seed(rng, mask, s: PathfinderSettings, margin, contrast, border: int, stop_with_availability=None):
    """snakes.seed_snake / the first seed of snakes2.initialize_two_seeds: a first paddle at a free pixel
    where the whole (margin-dilated) paddle fits, keeping ``border`` pixels from the window's edge."""
    length = s.paddle_length
    reach = length + margin
    struct_shape = (2 * reach + 1, 2 * reach + 1)
    if stop_with_availability is not None and len(_free_pixels(mask)[0]) / mask.size < stop_with_availability:
        return None
    for _ in range(s.max_paddle_retrial + 1):
        angle = int(rng.integers(-180, 180)) * math.pi / 180
        # the paddle's mask drawn from [reach + 1, reach + 1] of a small window, cast to uint8 as cv2 did
        _, struct, _ = draw_paddle(struct_shape, (reach + 1, reach + 1), angle, s, margin)
        blocked = mask.copy()
        blocked[:border, :] = 1
        blocked[mask.shape[0] - border:, :] = 1
        blocked[:, :border] = 1
        blocked[:, mask.shape[1] - border:] = 1
        free = _free_pixels(dilate(blocked, struct >= 1.0))
        if len(free[0]) == 0:
            return None
        k = int(rng.integers(0, len(free[0])))
        tail = (int(free[0][k]), int(free[1][k]))
        head = translate(tail, angle, length)
        pivot = translate(head, flip(angle), length + margin)
        if _out(head, mask.shape) or _out(pivot, mask.shape):
            continue
        placed = place_paddle(mask.shape, tail, angle, s, margin, contrast)
        if _collides(mask, placed):  # not tested by the original (see the module docstring)
            continue
        return _Snake(placed.full(mask.shape, "line"), placed.full(mask.shape, "mask"), pivot, angle,
                      [(tail, placed.end)])
    return None


def _second_seed(rng, first: _Snake, mask, s: PathfinderSettings, margin, contrast):
    """snakes2.initialize_two_seeds, second seed: ``seed_distance`` from the first tail, in any direction;
    tested against the first seed paddle (not done by the original)."""
    length = s.paddle_length
    tail1 = first.paddles[0][0]
    for _ in range(s.max_paddle_retrial + 1):
        angle = int(rng.integers(-180, 180)) * math.pi / 180
        direction = int(rng.integers(0, 360)) * math.pi / 180
        tail = (int(np.round(tail1[0] + s.seed_distance * math.sin(direction))),
                int(np.round(tail1[1] + s.seed_distance * math.cos(direction))))
        head = translate(tail, angle, length)
        pivot = translate(head, flip(angle), length + margin)
        if _out(head, mask.shape) or _out(pivot, mask.shape) or _out(tail, mask.shape):
            continue
        placed = place_paddle(mask.shape, tail, angle, s, margin, contrast)
        if _collides(np.maximum(mask, first.last_mask), placed):
            continue
        return _Snake(placed.full(mask.shape, "line"), placed.full(mask.shape, "mask"), pivot, angle,
                      [(tail, placed.end)])
    return None


def _choice(rng, options: Sequence[float]) -> float:
    return options[int(rng.integers(0, len(options)))] if len(options) > 1 else options[0]


def _two_target_snakes(rng, shape, s: PathfinderSettings, margin):
    """snakes2.two_snakes: two contours of ``contour_length`` paddles grown alternately; None on failure."""
    mus = list(rng.permutation(list(s.snake_contrast) * 2)[:2])
    mask = np.zeros(shape)
    p = s.padding
    mask[:p, :] = mask[-p:, :] = mask[:, :p] = mask[:, -p:] = 1
    first = _seed(rng, mask, s, margin, _choice(rng, s.paddle_contrast) * mus[0], border=2 * s.seed_distance)
    if first is None:
        return None
    second = _second_seed(rng, first, mask, s, margin, _choice(rng, s.paddle_contrast) * mus[1])
    if second is None:
        return None
    snakes = [first, second]
    for _ in range(s.contour_length - 1):
        contrast = _choice(rng, s.paddle_contrast)
        for k, snake in enumerate(snakes):
            obstacles = np.maximum(mask, snakes[1 - k].last_mask)
            mask = _extend(rng, snake, mask, obstacles, s, margin, contrast * mus[k])
            if mask is None:
                return None
    for snake in snakes:  # the original added only the second snake's last paddle
        mask = np.maximum(mask, snake.last_mask)
    return snakes, mask


def _grow_snake(rng, image, mask, n_paddles, s: PathfinderSettings, margin, stop_with_availability):
    """snakes.make_snake: a distractor of ``n_paddles`` paddles, or None."""
    snake = _seed(rng, mask, s, margin, _choice(rng, s.snake_contrast), border=1,
                  stop_with_availability=stop_with_availability)
    if snake is None:
        return None
    for _ in range(n_paddles - 1):
        mask = _extend(rng, snake, mask, mask, s, margin, _choice(rng, s.snake_contrast))
        if mask is None:
            return None
    return np.maximum(image, snake.image), np.maximum(mask, snake.last_mask), snake


def pathfinder_sample(rng: np.random.Generator, s: PathfinderSettings = PathfinderSettings()) -> Sample:
    """One image with its label and drawing record (snakes2.from_wrapper, one iteration)."""
    shape = (s.window_size, s.window_size)
    label = int(rng.integers(0, 2))
    margin = int(_choice(rng, s.paddle_margin))
    while True:
        grown = _two_target_snakes(rng, shape, s, margin)
        if grown is not None:
            break
    targets, mask = grown
    image = np.maximum(targets[0].image, targets[1].image)
    snakes = list(targets)
    for _ in range(s.num_distractor_snakes):  # make_many_snakes(..., allow_incomplete=True, stop at 1% free)
        for _ in range(s.max_distractor_contour_retrial + 1):
            grown = _grow_snake(rng, image, mask, s.distractor_length, s, margin, stop_with_availability=0.01)
            if grown is not None:
                image, mask, snake = grown
                snakes.append(snake)
                break
    origin = int(rng.integers(0, 2))
    terminal = origin if label == 1 else 1 - origin
    start = targets[origin].paddles[0][0]
    end = targets[terminal].paddles[-1][1]
    markers = np.maximum(draw_marker(s.window_size, start, s.marker_radius, s.antialias_scale),
                         draw_marker(s.window_size, end, s.marker_radius, s.antialias_scale))
    picture = bytescale(np.maximum(image, markers))
    record = [np.asarray([[near, far] for near, far in snake.paddles], np.float64) for snake in snakes]
    sample = Sample(picture, label, record, np.asarray([start, end], np.float64), (origin, terminal))
    _check(sample, s)
    return sample


def _check(sample: Sample, s: PathfinderSettings) -> None:
    """Every sample holds both markers and both full target snakes (no empty or truncated image)."""
    h = s.window_size
    for y, x in sample.markers.astype(int):
        if not (0 <= y < h and 0 <= x < h) or sample.image[y, x] == 0:
            raise RuntimeError(f"Pathfinder sample without its marker at {(y, x)}; this is a generator bug")
    if any(len(snake) != s.contour_length for snake in sample.snakes[:2]):
        raise RuntimeError("Pathfinder sample with a truncated target snake; this is a generator bug")


def _images_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Images ``lo..hi`` of chunk ``chunk`` of a split (a worker's task; top level so it pickles)."""
    seed, split, chunk, n, settings = args
    rng = split_rng(seed, split, chunk)
    samples = [pathfinder_sample(rng, settings) for _ in range(n)]
    return np.stack([x.image for x in samples]), np.asarray([x.label for x in samples], np.int8)


def pathfinder_images(n: int, split: str, seed: int = 0, settings: PathfinderSettings = PathfinderSettings(),
                      workers: int = 1, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, H, W) uint8 and labels (n,) int8 of one split, chunk by chunk."""
    jobs = [(seed, split, c, min(CHUNK, n - c * CHUNK), settings) for c in range(-(-n // CHUNK))]
    bar = progress_bar(range(n), n, f"Pathfinder{settings.window_size} {split}", progress, unit="image")
    images, labels = [], []

    def collect(result):
        images.append(result[0])
        labels.append(result[1])
        for _ in range(len(result[1])):
            next(bar, None)

    if workers > 1 and len(jobs) > 1:
        # "spawn": the parent may hold JAX's threads, which must not be forked.
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(_images_chunk, jobs):
                collect(result)
    else:
        for job in jobs:
            collect(_images_chunk(job))
    for _ in bar:
        pass
    if not images:
        size = settings.window_size
        return np.zeros((0, size, size), np.uint8), np.zeros((0,), np.int8)
    return np.concatenate(images), np.concatenate(labels)


# -- the LRA release's folders ------------------------------------------------------------------------

def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return f"{folder} holds {names}" if names else f"{folder} is empty or missing"


def _metadata_rows(file: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a metadata file: text lines split on whitespace, or an ``np.save``d array."""
    with open(file, "rb") as f:
        binary = f.read(6) == b"\x93NUMPY"
    try:
        if binary:
            rows = np.load(file, allow_pickle=False)
            return [(i + 1, [str(v) for v in np.atleast_1d(row)]) for i, row in enumerate(np.atleast_2d(rows))]
        text = file.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:
        raise UserInputError(f"{file}: not a readable metadata file ({err})") from None
    return [(i + 1, line.split()) for i, line in enumerate(text.splitlines()) if line.strip()]


def pathfinder_folder_samples(path: str | Path, subset: str) -> tuple[list[tuple[Path, int]], int]:
    """The (image file, label) pairs the metadata of one difficulty folder lists, and how many empty images
    it skipped. ``path``: the release's ``pathfinder32/`` (holding ``subset``) or the difficulty folder itself."""
    root = Path(path).expanduser()
    if not (root / "metadata").is_dir():
        if not (root / subset).is_dir():
            raise UserInputError(f"data.dataset.path={str(path)!r} holds neither metadata/ nor the folder "
                                 f"subset={subset!r} (the release's pathfinder32/ holds {', '.join(RELEASE_SUBSETS)}); "
                                 f"{_listing(root)}")
        root = root / subset
    files = sorted((root / "metadata").glob("*.npy"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if
                                                                    p.stem.isdigit() else 0, p.name))
    if not files:
        raise UserInputError(f"no metadata/*.npy file in {root} (the release's image lists); "
                             f"{_listing(root / 'metadata')}")
    samples, empty = [], 0
    for file in files:
        for line, fields in _metadata_rows(file):
            where = f"{file}, line {line}"
            if len(fields) < 4:
                raise UserInputError(f"{where}: expected at least 4 fields (image folder, file name, number, "
                                     f"label, ...), found {len(fields)}: {fields}")
            if fields[3] not in ("0", "1"):
                raise UserInputError(f"{where}: the label (field 4) must be 0 or 1, found {fields[3]!r}")
            image = root / fields[0] / fields[1]
            try:
                size = image.stat().st_size
            except OSError:
                raise UserInputError(f"{where} names {image}, which does not exist; "
                                     f"{_listing(image.parent)}") from None
            if size == 0:
                empty += 1
                continue
            samples.append((image, int(fields[3])))
    return samples, empty


def read_pathfinder_images(files: Sequence[Path], window_size: int, progress: bool = True) -> np.ndarray:
    """Grayscale images (n, window_size^2) uint8, row-major, from PNG files."""
    out = np.empty((len(files), window_size * window_size), np.uint8)
    bar = progress_bar(range(len(files)), len(files), "Pathfinder images", progress, unit="image")
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("L"))                     # (H, W) uint8
        except (OSError, ValueError) as err:
            raise UserInputError(f"{file}: not a readable image ({err})") from None
        if pixels.shape != (window_size, window_size):
            raise UserInputError(f"{file} is {pixels.shape[1]} x {pixels.shape[0]} pixels, not window_size="
                                 f"{window_size}; set data.dataset.window_size to the release's resolution")
        out[i] = pixels.reshape(-1)
        next(bar, None)
    for _ in bar:
        pass
    return out


def _file_split_sizes(n: int, n_train: int | None, n_val: int | None, n_test: int | None) -> list[int]:
    """Split sizes from ``n`` images: None is S4's 10% for val / test and the rest for train."""
    val = int(S4_HELD_OUT * n) if n_val is None else n_val
    test = int(S4_HELD_OUT * n) if n_test is None else n_test
    train = n - val - test if n_train is None else n_train
    if min(train, val, test) < 0 or train + val + test > n or train < 1:
        raise UserInputError(f"the metadata lists {n} non-empty images, too few for n_train={n_train}, "
                             f"n_val={n_val}, n_test={n_test}; lower them (null: S4's 80/10/10 split)")
    return [train, val, test]


class Pathfinder:
    """Pathfinder classification data (2 classes), sequences of window_size^2 pixels (row-major).

    Args:
      n_train, n_val, n_test: images per split (S4 on the LRA set: 160,000 / 20,000 / 20,000). With
        ``path``: drawn from the listed images; None: S4's 10% for val and test, the rest for train.
      features: the model input: "unit", "centered" or "tokens" (module docstring).
      seed: the random streams (one per split and chunk of images).
      window_size ... max_distractor_contour_retrial: the generator settings (``PathfinderSettings``;
        defaults LRA Pathfinder32). distractor_length None: contour_length // 3;
        num_distractor_snakes None: 20 // distractor_length.
      workers: processes drawing images; None: all CPUs (at most 32) from 1,000 images on, else 1.
        Does not change the data.
      cache_dir: where the images are cached (does not change the data).
      path: None draws the images; else the release's ``pathfinder32/`` folder (or one difficulty folder
        in it), read instead (module docstring): the drawing settings other than window_size then do not
        apply; seed draws the split.
      subset: the difficulty folder read under ``path``: curv_baseline, curv_contour_length_9 or
        curv_contour_length_14 (S4's, and the set the generator's defaults draw).
    """

    kind = "classification"
    splits = ("train", "val", "test")
    d_input = 1
    n_classes = 2
    volatile_keys = ("cache_dir", "workers")

    def __init__(self, n_train: int | None = 160_000, n_val: int | None = 20_000, n_test: int | None = 20_000,
                 features: str = "unit", seed: int = 0, window_size: int = 32, padding: int = 1,
                 antialias_scale: int = 2, seed_distance: int = 7, marker_radius: float = 1.5, contour_length: int = 14,
                 paddle_length: int = 2, paddle_thickness: float = 0.5, paddle_margin: Sequence[int] = (1,),
                 continuity: float = 1.0, distractor_length: int | None = None,
                 num_distractor_snakes: int | None = None, snake_contrast: Sequence[float] = (2.0,),
                 paddle_contrast: Sequence[float] = (0.75,), max_paddle_retrial: int = 2,
                 max_distractor_contour_retrial: int = 4, workers: int | None = None,
                 cache_dir: str = DEFAULT_CACHE_DIR, path: str | None = None, subset: str = "curv_contour_length_14"):
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
        if path is None and None in sizes.values():
            raise UserInputError(f"Pathfinder: {sizes} has a null split size, which means S4's split of the "
                                 f"release and applies only with data.dataset.path; give every size to draw images")
        check_sizes("Pathfinder", **{k: v for k, v in sizes.items() if v is not None})
        if features not in FEATURES:
            raise ValueError(f"Pathfinder: features={features!r} is unknown; choose one of {FEATURES}")
        distractor_length = contour_length // 3 if distractor_length is None else distractor_length
        if num_distractor_snakes is None:
            num_distractor_snakes = 20 // max(distractor_length, 1)
        self.settings = PathfinderSettings(
            window_size, padding, antialias_scale, seed_distance, float(marker_radius), contour_length, paddle_length,
            float(paddle_thickness), tuple(int(m) for m in paddle_margin), float(continuity), distractor_length,
            num_distractor_snakes, tuple(float(c) for c in snake_contrast), tuple(float(c) for c in paddle_contrast),
            max_paddle_retrial, max_distractor_contour_retrial)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.features, self.seed, self.workers, self.cache_dir = features, seed, workers, cache_dir
        self.path, self.subset = path, subset
        self.seq_len = window_size * window_size
        self.vocab_size = 256 if features == "tokens" else None

    def config(self) -> dict:
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.settings).items()}
        return {"n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test, "seed": self.seed, **settings}

    def _workers(self, n: int) -> int:
        if self.workers is not None:
            return max(1, int(self.workers))
        return 1 if n < PARALLEL_MIN_IMAGES else max(1, min(32, os.cpu_count() or 1))

    def generate(self, progress: bool = True) -> dict[str, np.ndarray]:
        out = {}
        for split, n in zip(self.splits, (self.n_train, self.n_val, self.n_test)):
            images, labels = pathfinder_images(n, split, self.seed, self.settings, self._workers(n), progress)
            out[f"{split}_images"], out[f"{split}_label"] = images.reshape(n, self.seq_len), labels
        return out

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        if self.path is not None:
            return self._read_release(progress)
        data = cached_arrays(f"pathfinder{self.settings.window_size}", self.config(), lambda: self.generate(progress),
                             self.cache_dir, version=PATHFINDER_GENERATOR_VERSION)
        return {split: {"inputs": data[f"{split}_images"], "label": data[f"{split}_label"].astype(np.int32)}
                for split in self.splits}

    def _read_release(self, progress: bool) -> dict[str, dict[str, np.ndarray]]:
        """The splits drawn from the images a release folder lists (module docstring)."""
        samples, empty = pathfinder_folder_samples(self.path, self.subset)
        if empty:
            logger.info("Pathfinder: skipped %d empty image file(s) the metadata lists", empty)
        n_train, n_val, n_test = _file_split_sizes(len(samples), self.n_train, self.n_val, self.n_test)
        order = split_rng(self.seed, "release").permutation(len(samples))
        # test first, then val, then train: the evaluation images do not change with n_train
        bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val),
                  "train": (n_test + n_val, n_test + n_val + n_train)}
        out = {}
        for split in self.splits:
            lo, hi = bounds[split]
            chosen = np.sort(order[lo:hi])                                 # file order: sequential reads
            images = read_pathfinder_images([samples[i][0] for i in chosen], self.settings.window_size, progress)
            out[split] = {"inputs": images, "label": np.asarray([samples[i][1] for i in chosen], np.int32)}
        return out

    def model_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Stored uint8 pixels (B, L) -> tokens (B, L) int32 or intensities (B, L, 1) float32."""
        if self.features == "tokens":
            return inputs.astype(np.int32)
        x = inputs.astype(np.float32)[..., None] / 255.0
        return (x - 0.5) / 0.5 if self.features == "centered" else x
