"""The Darcy task's normaliser against numpy statistics."""
import numpy as np

from experiments.tasks.pde import GaussianNormalizer


def test_normalizer_statistics():
    fields = np.random.default_rng(0).normal(2.0, 3.0, size=(50, 6, 6))
    mean, std = GaussianNormalizer("pointwise", eps=1e-5).fit(fields)
    np.testing.assert_allclose(mean[..., 0], fields.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[..., 0], fields.std(0) + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("global", eps=1e-5).fit(fields)
    np.testing.assert_allclose(mean, fields.mean(), rtol=1e-6)
    np.testing.assert_allclose(std, fields.std() + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("none").fit(fields)
    assert mean.shape == std.shape == (6, 6, 1)
    assert (mean == 0).all() and (std == 1).all()
