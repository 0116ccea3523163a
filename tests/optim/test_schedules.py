"""Learning-rate schedules against their closed forms, and the refined schedule's defining properties."""
from __future__ import annotations

import json

import numpy as np
import pytest

from optim.schedules import cosine, linear, read_grad_norms, refined, refined_weights, step_decay


def values(schedule, n):
    return np.array([float(schedule(t)) for t in range(n)])


def test_linear_warmup_then_linear_decay():
    s = values(linear(2.0, warmup_epochs=1, final_fraction=0.1, steps_per_epoch=10, total_steps=50), 51)
    np.testing.assert_allclose(s[:11], 2.0 * np.arange(11) / 10, rtol=1e-6)           # 0 -> 2 over 10 steps
    np.testing.assert_allclose(s[10:], 2.0 - 1.8 * np.arange(41) / 40, rtol=1e-6)     # 2 -> 0.2 over 40
    no_warmup = values(linear(1.0, steps_per_epoch=10, total_steps=20), 21)
    np.testing.assert_allclose(no_warmup, 1 - np.arange(21) / 20, atol=1e-7)


def test_warmup_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match="warm-up steps"):
        linear(1.0, warmup_epochs=5, steps_per_epoch=10, total_steps=50)


def test_existing_schedules_keep_their_closed_forms():
    np.testing.assert_allclose(values(step_decay(1.0, 2, 0.5, steps_per_epoch=5, total_steps=40), 31)[[0, 9, 10, 20, 30]],
                               [1.0, 1.0, 0.5, 0.25, 0.125])
    c = values(cosine(1.0, steps_per_epoch=10, total_steps=100), 101)
    np.testing.assert_allclose(c, 0.5 * (1 + np.cos(np.pi * np.arange(101) / 100)), atol=1e-6)


def test_refined_weights_hand_computed_and_constant_norms_give_linear_decay():
    # G = [1, 2, 1]: G^-2 = [1, 1/4, 1]; tails sum_{p>t} = [5/4, 1, 0]; w = [5/4, 1/4, 0] / (5/4).
    np.testing.assert_allclose(refined_weights(np.array([1.0, 2.0, 1.0])), [1.0, 0.2, 0.0])
    T = 50
    np.testing.assert_allclose(refined_weights(np.full(T, 3.0)), (T - 1 - np.arange(T)) / (T - 1), atol=1e-12)


def test_large_early_gradients_give_a_warmup_and_small_late_ones_a_fast_anneal():
    g = np.concatenate([np.linspace(10.0, 1.0, 20), np.ones(60), np.linspace(1.0, 0.5, 20)])
    w = refined_weights(g)
    assert np.argmax(w) > 10 and w[0] < 0.1  # rises first: a warm-up
    # Late, it stays above the straight line from its peak to 0 and drops over the last steps.
    peak = np.argmax(w)
    line = (len(g) - 1 - np.arange(len(g))) / (len(g) - 1 - peak)
    assert (w[85:-1] > line[85:-1]).all() and w[-2] > 3 * line[-2] and w[-1] == 0


def write_metrics(path, steps, norms, extra=True):
    rows = [{"step": s, "loss": 1.0, "grad_norm": g} for s, g in zip(steps, norms)]
    if extra:  # evaluation rows and a torn last line are ignored
        rows.append({"step": steps[-1], "split": "test", "grad_norm": 1e9})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + ('{"step": 9' if extra else ""))
    return path


def test_refined_schedule_reads_a_previous_run_and_stretches_it_over_this_one(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [25, 50, 75, 100], [2.0, 2.0, 2.0, 2.0])
    steps, norms = read_grad_norms(tmp_path)  # a run directory or the file itself
    assert list(steps) == [25, 50, 75, 100] and list(norms) == [2.0] * 4
    s = values(refined(0.01, str(tmp_path), smoothing=0.0, steps_per_epoch=10, total_steps=300), 300)
    np.testing.assert_allclose(s, 0.01 * (299 - np.arange(300)) / 299, rtol=1e-5, atol=1e-9)  # linear decay
    assert float(refined(0.01, str(tmp_path / "metrics.jsonl"), steps_per_epoch=1, total_steps=10)(10**6)) == 0.0


@pytest.mark.parametrize("content, message", [(None, "no metrics file"), ([5], "at least two log intervals")])
def test_refined_schedule_says_what_it_needs(tmp_path, content, message):
    if content is not None:
        write_metrics(tmp_path / "metrics.jsonl", content, [1.0] * len(content), extra=False)
    with pytest.raises(ValueError, match=message):
        refined(0.01, str(tmp_path), steps_per_epoch=1, total_steps=10)


def test_onecycle_closed_form_and_per_epoch_steps():
    """Cosine from value/div up to value at int(pct T), then down to value/(div * final_div) at T
    (torch OneCycleLR with anneal_strategy='cos'); per_epoch holds one rate per epoch."""
    from optim.schedules import onecycle

    value, div, final = 5e-4, 2.0, 100.0
    s = onecycle(value, pct_start=0.2, div_factor=div, final_div_factor=final, steps_per_epoch=10, total_steps=100)
    init, low = value / div, value / (div * final)
    cos_interp = lambda a, b, t: b + (a - b) * (1 + np.cos(np.pi * t)) / 2  # noqa: E731  a at t=0, b at t=1
    expected = {0: init, 10: cos_interp(init, value, 0.5), 20: value, 60: cos_interp(value, low, 0.5), 100: low}
    for step, want in expected.items():
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-5)
    e = onecycle(value, pct_start=0.2, div_factor=div, final_div_factor=final, per_epoch=True, steps_per_epoch=10,
                 total_steps=500)  # 50 epochs: the peak at epoch 10
    assert float(e(0)) == float(e(9)) and float(e(100)) == float(e(109))
    np.testing.assert_allclose([float(e(0)), float(e(100)), float(e(105))], [init, value, value], rtol=1e-5)
    with pytest.raises(ValueError, match="pct_start"):
        onecycle(value, pct_start=1.5, steps_per_epoch=10, total_steps=100)
