"""Pathfinder generator: labels against the drawing, contours apart, class balance, cache, workers.

Oracles: the connectivity of the two markers computed from the generator's drawing record alone (a
flood fill over the paddle-to-paddle links of each drawn contour, the markers attached to the contour
tips they sit on, never the generator's label), analytic segment distances (distinct contours never
touch: the pitfalls of snakes2.py corrected), and the rendered image (every paddle and marker lit).
"""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data import pathfinder as pf
from experiments.data.pathfinder import Pathfinder, PathfinderSettings, pathfinder_sample

SETTINGS = PathfinderSettings()


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(11)
    return [pathfinder_sample(rng, SETTINGS) for _ in range(40)]


def point_to_segments(x, u, v):
    """Exact distances from points x to segments uv (2-D, broadcast over the leading axes)."""
    d = v - u
    dd = np.einsum("...i,...i->...", d, d)
    t = np.where(dd > 0, np.clip(np.einsum("...i,...i->...", x - u, d) / np.where(dd > 0, dd, 1), 0, 1), 0.0)
    return np.linalg.norm(x - (u + t[..., None] * d), axis=-1)


def segment_distances(pq, ab) -> np.ndarray:
    """Exact distances between every segment of pq (N, 2, 2) and every one of ab (M, 2, 2): (N, M).
    Zero for a proper intersection, else the least of the four end-point-to-segment distances."""
    p, q = pq[:, None, 0], pq[:, None, 1]
    a, b = ab[None, :, 0], ab[None, :, 1]
    d1, d2 = q - p, b - a
    cross = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]
    safe = np.where(cross != 0, cross, 1.0)
    t = ((a[..., 0] - p[..., 0]) * d2[..., 1] - (a[..., 1] - p[..., 1]) * d2[..., 0]) / safe
    u = ((a[..., 0] - p[..., 0]) * d1[..., 1] - (a[..., 1] - p[..., 1]) * d1[..., 0]) / safe
    crossing = (cross != 0) & (0 <= t) & (t <= 1) & (0 <= u) & (u <= 1)
    ends = np.minimum.reduce([point_to_segments(p, a, b), point_to_segments(q, a, b),
                              point_to_segments(a, p, q), point_to_segments(b, p, q)])
    return np.where(crossing, 0.0, ends)


def test_segment_distances_by_hand():
    seg = lambda *xy: np.array(xy, float).reshape(1, 2, 2)
    assert segment_distances(seg(0, 0, 2, 2), seg(0, 2, 2, 0))[0, 0] == 0               # crossing
    assert segment_distances(seg(0, 0, 1, 0), seg(2, 0, 3, 0))[0, 0] == 1               # collinear, apart
    assert segment_distances(seg(0, 0, 2, 0), seg(1, 1, 1, 3))[0, 0] == 1               # a T, not touching
    np.testing.assert_allclose(segment_distances(seg(0, 0, 1, 0), seg(2, 1, 2, 1))[0, 0], np.sqrt(2))  # a point


def connected_by_flood_fill(sample) -> bool:
    """Are the two markers on one contour? Breadth-first fill over paddles, linked when one paddle's far end
    and the next one's near end are at most a paddle gap apart; markers attach to the tips they sit on."""
    paddles = [(k, i) for k, snake in enumerate(sample.snakes) for i in range(len(snake))]
    index = {p: n for n, p in enumerate(paddles)}
    links = {n: set() for n in range(len(paddles))}
    max_gap = 2 * SETTINGS.paddle_margin[0] + 2 * SETTINGS.paddle_length  # turn included
    for k, snake in enumerate(sample.snakes):
        for i in range(len(snake) - 1):
            assert np.linalg.norm(snake[i + 1, 0] - snake[i, 1]) <= max_gap, "a contour with a hole"
            links[index[k, i]].add(index[k, i + 1])
            links[index[k, i + 1]].add(index[k, i])

    def paddle_at(marker):  # the paddle whose end point is the marker's centre
        hits = [index[k, i] for k, snake in enumerate(sample.snakes) for i in (0, len(snake) - 1)
                for end in snake[i] if np.linalg.norm(end - marker) < 1e-9]
        assert len(hits) == 1, f"marker {marker} is on {len(hits)} contour tips"
        return hits[0]

    start, goal = paddle_at(sample.markers[0]), paddle_at(sample.markers[1])
    seen, frontier = {start}, [start]
    while frontier:
        frontier = [m for n in frontier for m in links[n] if m not in seen]
        seen.update(frontier)
    return goal in seen


def test_labels_equal_marker_connectivity(samples):
    for s in samples:
        assert s.label == int(connected_by_flood_fill(s))
    assert {s.label for s in samples} == {0, 1}


def test_distinct_contours_never_touch(samples):
    """Paddles of different contours stay apart (the original let the two targets and distractor seeds
    touch); consecutive paddles of one contour are a gap apart, so each contour is one dashed line."""
    closest = np.inf
    for s in samples:
        for k in range(len(s.snakes)):
            for m in range(k + 1, len(s.snakes)):
                d = segment_distances(np.asarray(s.snakes[k], float), np.asarray(s.snakes[m], float))
                closest = min(closest, d.min())
    assert closest > 0.5


def test_image_shows_the_record(samples):
    for s in samples:
        assert s.image.shape == (32, 32) and s.image.dtype == np.uint8 and s.image.max() == 255
        assert len(s.snakes[0]) == len(s.snakes[1]) == SETTINGS.contour_length
        assert all(len(d) == SETTINGS.distractor_length for d in s.snakes[2:])
        assert len(s.snakes) - 2 <= SETTINGS.num_distractor_snakes
        for snake in s.snakes:
            for near, far in snake:
                mid = np.floor((near + far) / 2 + 0.5).astype(int)
                assert s.image[tuple(np.clip(mid, 0, 31))] > 0          # every paddle is drawn
        for y, x in s.markers.astype(int):
            assert s.image[y, x] >= 100                                  # both markers are drawn
        lit = s.image > 0
        assert 0.1 < lit.mean() < 0.6


def test_dataset_class_balance_cache_and_workers(samples, tmp_path, monkeypatch):
    kw = dict(n_train=16, n_val=8, n_test=8, seed=4, cache_dir=str(tmp_path))
    data = Pathfinder(workers=1, **kw).load(progress=False)
    labels = np.concatenate([data[s]["label"] for s in ("train", "val", "test")] + [[s.label for s in samples]])
    assert data["train"]["inputs"].shape == (16, 1024) and data["train"]["inputs"].dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1}
    assert abs(labels.mean() - 0.5) < 4 * np.sqrt(0.25 / len(labels))  # Bernoulli(1/2) labels
    # row-major flattening of the drawn image: the first training image is sample 0 of chunk 0
    first = pathfinder_sample(pf.split_rng(4, "train", 0), SETTINGS)
    np.testing.assert_array_equal(data["train"]["inputs"][0], first.image.reshape(-1))
    assert data["train"]["label"][0] == first.label
    # a second call reads the cache file; the worker count does not change the data
    monkeypatch.setattr(Pathfinder, "generate", lambda self, progress=True: pytest.fail("cache not used"))
    again = Pathfinder(workers=4, **kw).load(progress=False)
    for s in data:
        np.testing.assert_array_equal(again[s]["inputs"], data[s]["inputs"])
    monkeypatch.undo()
    monkeypatch.setattr(pf, "CHUNK", 3)  # two chunks of the train split, drawn by two processes
    images, _ = pf.pathfinder_images(6, "train", 4, SETTINGS, workers=2, progress=False)
    in_process, _ = pf.pathfinder_images(6, "train", 4, SETTINGS, workers=1, progress=False)
    np.testing.assert_array_equal(images, in_process)
    np.testing.assert_array_equal(images[3], pathfinder_sample(pf.split_rng(4, "train", 1), SETTINGS).image)


def test_features():
    ds = Pathfinder(n_train=1, n_val=1, n_test=1, features="centered")
    x = np.array([[0, 255, 51]], np.uint8)
    np.testing.assert_allclose(ds.model_inputs(x)[..., 0], [[-1.0, 1.0, -0.6]], atol=1e-6)
    assert Pathfinder(features="unit").model_inputs(x).shape == (1, 3, 1)
    tokens = Pathfinder(features="tokens")
    assert tokens.vocab_size == 256 and tokens.model_inputs(x).dtype == np.int32
    with pytest.raises(ValueError, match="features"):
        Pathfinder(features="rgb")
    with pytest.raises(ValueError, match="thickness"):
        Pathfinder(paddle_thickness=0.3)
