"""Oracle tests of the cosine-basis Gaussian random field (GRF.m of the FNO generator)."""
import numpy as np
import scipy.fft

from operators.pde.grf import gaussian_random_field_cosine


def kl_coefficients_of_grf_m(xi, alpha, tau):
    """L = s * tau^(alpha-1) (pi^2 (k1^2 + k2^2) + tau^2)^(-alpha/2) * xi, L[0, 0] = 0 (GRF.m)."""
    s = xi.shape[-1]
    k1, k2 = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    coef = tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    L = s * coef * xi
    L[..., 0, 0] = 0.0
    return L, coef


def test_forward_dct_recovers_kl_coefficients_from_same_normals():
    s, alpha, tau = 20, 2.5, 4.0
    fields = gaussian_random_field_cosine(np.random.default_rng(11), 3, s, alpha, tau)
    assert fields.shape == (3, s, s) and fields.dtype == np.float64
    xi = np.random.default_rng(11).standard_normal((3, s, s))
    expected, _ = kl_coefficients_of_grf_m(xi, alpha, tau)
    recovered = scipy.fft.dctn(fields, type=2, norm="ortho", axes=(1, 2))
    np.testing.assert_allclose(recovered, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_each_sample_has_zero_mean():
    fields = gaussian_random_field_cosine(np.random.default_rng(0), 5, 33)
    assert np.all(np.abs(fields.mean(axis=(1, 2))) < 1e-14)
    assert np.all(fields.std(axis=(1, 2)) > 1e-3)


def test_dct_coefficient_variance_matches_covariance_spectrum():
    n, s, alpha, tau = 4000, 8, 2.0, 3.0
    fields = gaussian_random_field_cosine(np.random.default_rng(5), n, s, alpha, tau)
    coefficients = scipy.fft.dctn(fields, type=2, norm="ortho", axes=(1, 2))
    _, coef = kl_coefficients_of_grf_m(np.zeros((s, s)), alpha, tau)
    expected = (s * coef) ** 2
    empirical = (coefficients**2).mean(axis=0)  # zero-mean coefficients
    assert empirical[0, 0] < 1e-25  # L[0, 0] = 0: no mean mode
    ratio = empirical.ravel()[1:] / expected.ravel()[1:]
    # Sample variance of n normals: relative standard deviation sqrt(2 / n) ~ 2.2%.
    assert np.all(np.abs(ratio - 1) < 5 * np.sqrt(2 / n)), ratio
    assert abs(ratio.mean() - 1) < 5 * np.sqrt(2 / n / ratio.size)
