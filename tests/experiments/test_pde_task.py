"""The Darcy task's normaliser against numpy statistics."""
import numpy as np

from experiments.tasks.pde import GaussianNormalizer


def test_normalizer_statistics():
    fields = np.random.default_rng(0).normal([2.0, -1.0], [3.0, 0.5], size=(50, 6, 6, 2))  # 2 channels
    mean, std = GaussianNormalizer("pointwise", eps=1e-5).fit(fields)
    np.testing.assert_allclose(mean, fields.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, fields.std(0) + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("global", eps=1e-5).fit(fields)
    assert mean.shape == std.shape == (6, 6, 2)
    for c in range(2):  # one statistic per channel, over samples and grid
        np.testing.assert_allclose(mean[..., c], fields[..., c].mean(), rtol=1e-6)
        np.testing.assert_allclose(std[..., c], fields[..., c].std() + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("none").fit(fields)
    assert mean.shape == std.shape == (6, 6, 2)
    assert (mean == 0).all() and (std == 1).all()
