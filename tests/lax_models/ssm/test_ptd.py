"""PTD of HiPPO-LegS: conditioning, size of E, transfer function against the DPLR system, the in-memory
cache, S4-PTD = ``S4D(init="ptd")``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ssm_test_oracles import recurrent_output

from lax_models.ssm import SSMParam
from lax_models.ssm import ptd as ptd_module
from lax_models.ssm.hippo import dplr, hippo_matrices
from lax_models.ssm.ptd import eigenvector_condition, ptd_init, ptd_legs, ptd_objective
from lax_models.ssm.s4d import S4D


@pytest.fixture(scope="module")
def legs64():
    """The N = 64 solve with the default settings (about 2 s single-threaded; then from the in-memory cache)."""
    return ptd_legs(64)


def test_objective_gradient_matches_finite_differences():
    """Analytic gradient of cond(V) + gamma ||E|| / ||A|| + pair barrier vs central differences (N = 8)."""
    A, _ = hippo_matrices("legs", 8)
    rng = np.random.default_rng(0)
    iu = np.triu_indices(8, 1)
    x = 0.05 * ((A - A.T) / 2)[iu] + 0.1 * rng.standard_normal(iu[0].size)
    J = lambda x: ptd_objective(x, A, 1000.0, tau=0.5)  # noqa: E731  barrier large enough to matter
    _, grad = J(x)
    h = 1e-6
    fd = np.array([(J(x + h * e)[0] - J(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)])
    assert np.abs(fd - grad).max() < 1e-6 * np.abs(grad).max()
    barrier_only = ptd_objective(x, A, 1000.0, tau=0.5)[1] - ptd_objective(x, A, 1000.0, tau=0.0)[1]
    assert np.abs(barrier_only).max() > 1e-3 * np.abs(grad).max()  # the barrier term was exercised


def test_conditioning_and_size_of_E_at_N64(legs64):
    """cond(V): ~1e20 unperturbed (saturated in float64) -> < 1e3 (measured 16); ||E|| / ||A|| < 0.05 (0.014)."""
    A, _ = hippo_matrices("legs", 64)
    cond_before = eigenvector_condition(A)
    r = legs64
    assert cond_before > 1e15, cond_before
    assert r.cond_V < 1e3 and abs(np.linalg.cond(r.V) - r.cond_V) < 1e-6 * r.cond_V, r.cond_V
    assert r.rel_norm_E < 0.05 and np.isclose(r.norm_E, np.linalg.norm(r.E, 2)), r.rel_norm_E
    np.testing.assert_allclose(r.E, -r.E.T, atol=0)  # skew-symmetric by construction
    # the decomposition is exact: A + E = V diag(Lambda) V^{-1}
    rec = r.V @ np.diag(r.Lambda) @ r.Vinv
    assert np.abs(rec - (A + r.E)).max() < 1e-10 * np.abs(A).max()
    np.testing.assert_allclose(r.Vinv @ r.V, np.eye(64), atol=1e-10)
    # stable (Hermitian part of A + E is -I/2 - P P^T) and conjugate-paired as documented
    assert r.Lambda.real.max() <= -0.5 + 1e-9
    np.testing.assert_allclose(r.Lambda[32:], r.Lambda[:32].conj(), atol=0)
    np.testing.assert_allclose(r.V[:, 32:], r.V[:, :32].conj(), atol=0)
    assert np.all(r.Lambda[:32].imag < 0) and np.all(np.diff(r.Lambda[:32].imag) >= 0)
    np.testing.assert_allclose(np.linalg.norm(r.V, axis=0), 1.0, rtol=1e-12)


def test_transfer_function_close_to_dplr(legs64):
    """PTD vs DPLR (HiPPO-LegS) transfer functions on s = i w, w in {0} U logspace(-2, log10(20 N^2), 1500).

    G(s) = C (s I - A)^{-1} B with the HiPPO B and unit-norm random C (3 draws). Checked:
    1. G_PTD from (Lambda, V, Vinv) equals C (sI - A - E)^{-1} B (the decomposition is consistent);
    2. pointwise |G_PTD - G_DPLR| <= 2 ||E||_2 ||C|| ||(sI - A)^{-1} B|| (resolvent identity and
       ||(sI - A - E)^{-1}|| <= 2 since Re W(A + E) <= -1/2: the mechanism of Theorem 3; measured <= 0.005x);
    3. sup |G_PTD - G_DPLR| <= (2 ln N + 4) ||E||_2 ||C|| (Theorem 3's leading term; loose here: 0.31 vs 443, so the measured
       sup is pinned too);
    4. where S4D-LegS (diagonal of the normal part, B/2) has its O(1) spikes (w >= N^2/10), the PTD gap is
       below 5% of the S4D gap (measured <= 0.7%), and sup over the whole grid PTD < S4D (ratio 0.07-0.34).
    """
    N = 64
    r = legs64
    A, B = hippo_matrices("legs", N)
    w = np.concatenate([[0.0], np.logspace(-2, np.log10(20 * N**2), 1500)])
    s = 1j * w
    resolvent_B = np.linalg.solve(s[:, None, None] * np.eye(N) - A, np.broadcast_to(B, (w.size, N))[..., None])[..., 0]
    resolvent_pert_B = np.linalg.solve(
        s[:, None, None] * np.eye(N) - (A + r.E), np.broadcast_to(B, (w.size, N))[..., None]
    )[..., 0]
    normal = dplr("legs", N, conj_sym=False, B_clip=None)
    high = w >= N**2 / 10
    rng = np.random.default_rng(0)
    for _ in range(3):
        C = rng.standard_normal(N)
        C /= np.linalg.norm(C)
        G = resolvent_B @ C  # (W,) DPLR / HiPPO-LegS
        G_ptd = ((C @ r.V) * (r.Vinv @ B)) @ (1 / (s[None, :] - r.Lambda[:, None]))
        G_s4d = ((C @ normal.V) * (normal.V.conj().T @ B / 2)) @ (1 / (s[None, :] - normal.Lambda[:, None]))
        gap, gap_s4d = np.abs(G_ptd - G), np.abs(G_s4d - G)
        assert np.abs(G_ptd - resolvent_pert_B @ C).max() < 1e-9 * np.abs(G).max()
        assert np.all(gap <= 2 * r.norm_E * np.linalg.norm(resolvent_B, axis=1) + 1e-12)
        assert gap.max() <= (2 * np.log(N) + 4) * r.norm_E
        # The two bounds above are the paper's and loose here (Theorem 3: 443 against a measured sup of
        # 0.23-0.31 for the three draws; the pointwise one by ~230x), so the measured behaviour is also
        # pinned, with a 1.6-2.3x margin: a PTD that were 2x worse would fail.
        assert gap.max() < 0.5, gap.max()
        assert np.all(gap <= 1e-2 * r.norm_E * np.linalg.norm(resolvent_B, axis=1) + 1e-12)
        assert gap_s4d.max() > 0.5  # S4D-LegS: O(1) deviation (the paper's non-uniform convergence)
        assert gap[high].max() < 0.05 * gap_s4d[high].max(), (gap[high].max(), gap_s4d[high].max())
        assert gap.max() < gap_s4d.max(), (gap.max(), gap_s4d.max())


def test_gamma_trades_size_of_E_against_conditioning():
    results = [ptd_legs(16, gamma=g) for g in (100.0, 1000.0, 10000.0)]
    rel = [r.rel_norm_E for r in results]
    cond = [r.cond_V for r in results]
    assert rel[0] > rel[1] > rel[2] and cond[0] < cond[1] < cond[2], (rel, cond)


def test_solve_is_cached_in_memory_once_per_settings(monkeypatch):
    calls = []
    solve = ptd_module.perturb_then_diagonalize

    def counting(*args, **kwargs):
        calls.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(ptd_module, "perturb_then_diagonalize", counting)
    first = ptd_legs(8, gamma=777.0)  # settings no other test uses: not solved yet in this process
    second = ptd_legs(8, gamma=777)  # the same settings, spelt differently
    assert len(calls) == 1
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    ptd_legs(8, gamma=777.5)  # other settings: another solve
    assert len(calls) == 2
    with pytest.raises(ValueError, match="read-only"):  # the cached arrays are shared: not writable
        first.Lambda[0] = 0.0


def test_ptd_init_api(legs64):
    Lambda, V, Vinv = ptd_init(64)
    assert Lambda.shape == (64,) and V.shape == Vinv.shape == (64, 64)
    assert Lambda.dtype == V.dtype == Vinv.dtype == np.complex128
    np.testing.assert_array_equal(Lambda, legs64.Lambda)
    np.testing.assert_array_equal(Vinv, legs64.Vinv)
    # half form: 2 Re of the half system reproduces the real matrix A + E
    A, _ = hippo_matrices("legs", 64)
    half = 2 * np.real(V[:, :32] @ np.diag(Lambda[:32]) @ Vinv[:32])
    assert np.abs(half - (A + legs64.E)).max() < 1e-10 * np.abs(A).max()


def test_s4ptd_layer(legs64):
    """S4-PTD = S4D initialised with the PTD eigenvalues and V^{-1} B; CNN == RNN (float32, 1e-4 relative).

    ``S4D(init="ptd")`` replaced the subclass ``S4PTD`` (which only passed ``init="ptd"`` on); its
    Lambda, B and C were checked bit for bit against the old class when it was removed. Here: Lambda and
    B from the PTD solve, and C, D, log_dt the same random draws as any other S4D init of the same rngs.
    """
    model = S4D(2, d_state=64, init="ptd", rngs=nnx.Rngs(0))
    Lambda, B, C, dt = model.ssm_parameters()
    _, B_hippo = hippo_matrices("legs", 64)
    np.testing.assert_allclose(np.asarray(Lambda[1]), legs64.Lambda[:32], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(B[0]), legs64.Vinv[:32] @ B_hippo, rtol=1e-5, atol=1e-5)
    other_init = S4D(2, d_state=64, init="lin", rngs=nnx.Rngs(0))
    _, _, C_lin, dt_lin = other_init.ssm_parameters()
    np.testing.assert_array_equal(np.asarray(C), np.asarray(C_lin))
    np.testing.assert_array_equal(np.asarray(dt), np.asarray(dt_lin))
    np.testing.assert_array_equal(np.asarray(model.D[...]), np.asarray(other_init.D[...]))
    assert "Lambda_im" in nnx.state(model, SSMParam)
    x = jax.random.normal(jax.random.key(1), (2, 16, 2))
    y = model(x)
    err = float(jnp.abs(y - recurrent_output(model, x)).max() / jnp.abs(y).max())
    assert err < 1e-4, err


@pytest.mark.parametrize("N", [2, 4, 6, 10, 16, 32])
def test_small_sizes_stay_paired_and_well_conditioned(N):
    """The solve keeps the iterate where A + E has no real eigenvalue (else N/2 pairs would not exist)."""
    r = ptd_legs(N)
    assert np.all(np.abs(r.Lambda.imag) > 0) and r.cond_V < 1e3 and r.rel_norm_E < 0.1
    assert r.Lambda.real.max() <= -0.5 + 1e-9
    A, _ = hippo_matrices("legs", N)
    assert np.abs(r.V @ np.diag(r.Lambda) @ r.Vinv - (A + r.E)).max() < 1e-10 * np.abs(A).max()


def test_errors():
    with pytest.raises(ValueError, match="even"):
        ptd_legs(7)
    with pytest.raises(ValueError, match="gamma > 0"):
        ptd_legs(8, gamma=0.0)
    with pytest.raises(ValueError, match="square"):
        ptd_module.perturb_then_diagonalize(np.zeros((4, 6)))
