"""optim.adam against a naive transcription of torch.optim.Adam (coupled L2 weight decay)."""
import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

from optim import adam, schedules


def naive_torch_adam(theta, grads, lr, b1, b2, eps, wd):
    """Slow reference: torch.optim.Adam.step, one parameter vector, float64."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta.copy())
    return out


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_matches_torch_semantics(wd):
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(6)]
    expected = naive_torch_adam(theta0, grads, 1e-2, 0.9, 0.999, 1e-8, wd)
    with jax.enable_x64(True):
        tx = adam(1e-2, weight_decay=wd)
        params = jnp.asarray(theta0)
        state = tx.init(params)
        for g, want in zip(grads, expected):
            updates, state = tx.update(jnp.asarray(g), state, params)
            params = optax.apply_updates(params, updates)
            np.testing.assert_allclose(np.asarray(params), want, rtol=1e-12, atol=1e-12)


def test_adam_decay_is_coupled_not_decoupled():
    # With zero gradient, coupled decay is normalised by Adam (step ~ lr*sign), AdamW's is lr*wd*theta.
    tx = adam(0.1, weight_decay=1e-3)
    p = jnp.array([2.0])
    u, _ = tx.update(jnp.zeros(1), tx.init(p), p)
    np.testing.assert_allclose(np.asarray(u), [-0.1], rtol=1e-4)


def test_step_decay_halves_every_n_epochs():
    s = schedules.step_decay(1e-3, every_epochs=100, gamma=0.5, steps_per_epoch=50, total_steps=25000)
    assert float(s(0)) == pytest.approx(1e-3)
    assert float(s(100 * 50 - 1)) == pytest.approx(1e-3)
    assert float(s(100 * 50)) == pytest.approx(5e-4)
    assert float(s(450 * 50)) == pytest.approx(1e-3 / 16)


def test_cosine_ends_at_final_fraction():
    s = schedules.cosine(1e-3, warmup_epochs=1, final_fraction=0.1, steps_per_epoch=10, total_steps=100)
    assert float(s(0)) == pytest.approx(0.0)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(100)) == pytest.approx(1e-4)
