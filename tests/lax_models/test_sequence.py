"""The deep sequence model: padding-blind pooling, causality, step mode, generation against re-running the
full model, the runner's toy tasks, and learning a task that needs memory (delayed copy) with S5 and
with the long convolution.

Compilation dominates the cost of these small models, so the tests share what they can: one token
language model per causal block (module fixture), run on one token shape, serves the causality,
step-mode, generation and dropout checks; layer shapes repeat (d_model 16, vocabulary 6) so parameter
initialisers compile once; the trainings score held-out accuracy inside the training step."""
from __future__ import annotations

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lax_models.longconv import LongConv
from lax_models.sequence import Mixer, SequenceBlock, SequenceModel
from lax_models.ssm.s5 import S5

MIXERS = {
    "s5": functools.partial(S5, d_state=8),
    "s5_bidirectional": functools.partial(S5, d_state=8, bidirectional=True),
    "longconv": functools.partial(LongConv, lam=0.0),
    "longconv_bidirectional": functools.partial(LongConv, lam=0.0, bidirectional=True),
}
CAUSAL = ["s5", "longconv"]
# (mixer, block gate): every causal mixer in the plain block and in the H3 / Hyena gated block
CAUSAL_BLOCKS = [(m, g) for g in ("none", "hyena") for m in CAUSAL]
apply = nnx.jit(lambda model, x, mask=None: model(x, mask))
# The token language models are run on (BATCH, LENGTH) tokens only: BATCH = LENGTH + 1 rows hold a
# sequence and its LENGTH one-token edits (causality), and the same shape serves the other checks.
VOCAB, LENGTH = 6, 12
BATCH = LENGTH + 1


def _model(mixer="s5", **kw):
    kw = {"d_output": 3, "d_model": 16, "n_layers": 2, "l_max": 12, **kw}
    return SequenceModel(mixer=MIXERS[mixer], rngs=nnx.Rngs(0), **kw)


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _tokens(seed=0, shape=(BATCH, LENGTH)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, shape), jnp.int32)


@pytest.fixture(scope="module")
def token_model():
    """``token_model(mixer, gate)``: a token language model (dropout 0.3, in eval mode), built once per
    causal block for the whole module: 2 layers with the plain block (the per-layer states), 1 gated
    (its state adds the short convolution's buffer)."""
    built = {}

    def get(mixer, gate):
        if (mixer, gate) not in built:
            model = _model(mixer, vocab_size=VOCAB, d_output=VOCAB, head="token", dropout=0.3, gate=gate,
                           n_layers=2 if gate == "none" else 1)
            model.eval()
            built[mixer, gate] = model
        return built[mixer, gate]

    return get


def _toy_tasks():
    """tests/experiments/toy_tasks.py, the runner's toy task families."""
    path = pathlib.Path(__file__).parents[1] / "experiments" / "toy_tasks.py"
    spec = importlib.util.spec_from_file_location("toy_tasks_for_sequence_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# Construction and shapes
# ----------------------------------------------------------------------------------------------
def test_mixer_factory_is_called_once_per_layer_with_the_contract_arguments():
    calls = []

    def factory(**kwargs):
        calls.append(kwargs)
        return S5(kwargs["d_model"], d_state=4, l_max=kwargs["l_max"], rngs=kwargs["rngs"])

    model = SequenceModel(3, d_model=16, n_layers=3, mixer=factory, l_max=20, rngs=nnx.Rngs(0))
    assert [sorted(c) for c in calls] == [["d_model", "l_max", "rngs"]] * 3
    assert all(c["d_model"] == 16 and c["l_max"] == 20 for c in calls)
    assert jax.eval_shape(model, _inputs((2, 7, 1))).shape == (2, 3)
    assert jax.eval_shape(model, _inputs((2, 7))).shape == (2, 3)  # (batch, length) floats: d_input = 1
    with pytest.raises(ValueError, match="mixer must be a factory"):
        SequenceModel(4, mixer=S5(4, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))


def test_every_mixer_is_a_mixer_and_a_layer_without_the_recurrent_mode_is_refused():
    for factory in MIXERS.values():
        assert isinstance(factory(d_model=16, l_max=8, rngs=nnx.Rngs(0)), Mixer)

    class ParallelOnly(nnx.Module):  # __call__ only: no init_state / step
        def __init__(self, d_model, l_max=None, *, rngs):
            self.proj = nnx.Linear(d_model, d_model, rngs=rngs)

        def __call__(self, x):
            return self.proj(x)

    assert not isinstance(ParallelOnly(16, rngs=nnx.Rngs(0)), Mixer)
    with pytest.raises(TypeError, match=r"ParallelOnly .*lacks init_state, step"):
        SequenceModel(3, d_model=16, n_layers=1, mixer=ParallelOnly, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="lacks init_state, step"):
        SequenceBlock(16, ParallelOnly(16, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("prenorm, glu", [(True, True), (False, False)])
def test_heads_and_encoders_give_the_documented_shapes(prenorm, glu):
    pool = _model(d_input=2, prenorm=prenorm, glu=glu, n_layers=1)
    assert jax.eval_shape(pool, _inputs((4, 9, 2))).shape == (4, 3)
    tokens = jax.ShapeDtypeStruct((4, 9), jnp.int32)
    lm = _model(vocab_size=VOCAB, d_output=VOCAB, head="token", prenorm=prenorm, glu=glu, n_layers=1)
    assert jax.eval_shape(lm, tokens).shape == (4, 9, VOCAB)
    assert (pool.final_norm is None) == (not prenorm) and pool.blocks[0].out.out_features == (32 if glu else 16)


@pytest.mark.parametrize("kwargs, x, message", [
    (dict(), jnp.zeros((2, 5), jnp.int32), "set vocab_size"),
    (dict(vocab_size=VOCAB), jnp.zeros((2, 5, 1)), "integers of shape"),
    (dict(d_input=2), jnp.zeros((2, 5, 3)), r"d_input=2"),
])
def test_bad_inputs_are_clear_errors(kwargs, x, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)(x)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="head"):
        _model(head="seq")
    with pytest.raises(ValueError, match="pooling"):
        _model(pooling="max")
    with pytest.raises(ValueError, match="token language model"):
        _model().generate(jnp.zeros((1, 2), jnp.int32), 2, temperature=0)
    with pytest.raises(ValueError, match="no recurrent step"):
        _model("s5_bidirectional", vocab_size=VOCAB, d_output=VOCAB, head="token").generate(
            jnp.zeros((1, 2), jnp.int32), 2, temperature=0)
    with pytest.raises(ValueError, match="needs key"):
        _model(vocab_size=VOCAB, d_output=VOCAB, head="token").generate(jnp.zeros((1, 2), jnp.int32), 2)


# ----------------------------------------------------------------------------------------------
# Masks and pooling
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer, pooling, gate", [(m, "mean", "none") for m in MIXERS]
                         + [("s5_bidirectional", "last", "none"), ("s5_bidirectional", "mean", "hyena")])
def test_pooling_ignores_padding(mixer, pooling, gate):
    model = _model(mixer, pooling=pooling, d_input=2, n_layers=1, gate=gate)
    lengths = np.array([3, 12, 7, 1])
    mask = jnp.asarray(np.arange(12)[None, :] < lengths[:, None])
    x = _inputs((4, 12, 2))
    other = jnp.where(mask[..., None], x, _inputs((4, 12, 2), seed=1) * 100.0)  # new padding values
    logits = np.asarray(apply(model, x, mask))
    np.testing.assert_allclose(np.asarray(apply(model, other, mask)), logits, atol=1e-5, rtol=1e-5)
    if mixer == "s5_bidirectional":
        # without the mask (every position declared real) the padding does reach the real positions
        # through the backward scan
        assert not np.allclose(np.asarray(apply(model, other, jnp.ones_like(mask))), logits, atol=1e-3)
        # pooled logits of a padded sequence == those of the sequence alone, unpadded
        alone = apply(model, x[2:3, :lengths[2]])
        np.testing.assert_allclose(np.asarray(alone[0]), logits[2], atol=1e-4, rtol=1e-4)


def test_dropout_is_tied_along_the_length_and_off_in_eval_mode(token_model):
    model = nnx.clone(token_model("s5", "none"))  # dropout 0.3
    model.train()
    drop = model.blocks[0].drop
    mask = np.asarray(drop(jnp.ones((3, 10, 16))))
    assert np.all(mask == mask[:, :1]) and 0 < np.mean(mask == 0) < 1  # one mask per sequence and channel
    tokens = _tokens(seed=6)
    train = nnx.jit(lambda m, x: m(x))
    assert not np.allclose(np.asarray(train(model, tokens)), np.asarray(train(model, tokens)))
    model.eval()
    np.testing.assert_array_equal(np.asarray(apply(model, tokens)), np.asarray(apply(model, tokens)))


# ----------------------------------------------------------------------------------------------
# Causality, recurrent mode and generation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mixer, gate", CAUSAL_BLOCKS)
def test_token_model_is_causal(token_model, mixer, gate):
    """Row 0 is a sequence, row t + 1 the same with token t replaced: the logits at position i may
    change only for t <= i."""
    model = token_model(mixer, gate)
    rng = np.random.default_rng(3)
    base = rng.integers(0, VOCAB, LENGTH)
    edited = (base + rng.integers(1, VOCAB, LENGTH)) % VOCAB                          # != base everywhere
    seqs = np.tile(base, (BATCH, 1))
    seqs[1 + np.arange(LENGTH), np.arange(LENGTH)] = edited
    logits = np.asarray(apply(model, jnp.asarray(seqs, jnp.int32)))                  # (1 + L, L, vocab)
    influence = np.abs(logits[1:] - logits[:1]).sum(axis=-1).T                       # (L, L): [i, t]
    future = np.triu(np.ones((LENGTH, LENGTH), bool), k=1)                           # t > i
    assert influence[future].max() < 1e-6 * influence.max()  # exactly 0 for S5, FFT round-off for the conv
    assert influence[~future].min() > 0


@pytest.mark.parametrize("mixer, gate", CAUSAL_BLOCKS)
def test_parallel_model_equals_recurrent_step_mode(token_model, mixer, gate):
    model = token_model(mixer, gate)
    tokens = _tokens(seed=4)
    step = nnx.jit(lambda m, s, v: m.step(s, v))
    state, logits = model.init_state(BATCH), []
    for t in range(LENGTH):
        state, out = step(model, state, tokens[:, t])
        logits.append(out)
    np.testing.assert_allclose(np.stack(logits, 1), np.asarray(apply(model, tokens)), atol=2e-5, rtol=2e-5)


def _rerun_decoding(model, prompt, n_new, key, temperature):
    """The oracle: run the whole model on the sequence so far and sample from the last real position.

    The sequence lives in a buffer of the final length (zeros after the tokens so far), so that one
    compiled model serves every length; the model is causal (tested above), so the zeros after
    position t do not change the logits at t.
    """
    keys = jax.random.split(key, n_new)
    l0 = prompt.shape[1]
    seq = jnp.concatenate([prompt, jnp.zeros((prompt.shape[0], n_new), jnp.int32)], axis=1)
    for i in range(n_new):
        logits = apply(model, seq)[:, l0 + i - 1]
        if temperature == 0:
            new = jnp.argmax(logits, axis=-1)
        else:
            new = jax.random.categorical(keys[i], logits / temperature, axis=-1)
        seq = seq.at[:, l0 + i].set(new.astype(jnp.int32))
    return seq


@pytest.mark.parametrize("mixer, gate", CAUSAL_BLOCKS)
def test_generate_equals_rerunning_the_full_model(token_model, mixer, gate):
    model = token_model(mixer, gate)  # dropout 0.3, in eval mode
    prompt = _tokens(seed=5, shape=(BATCH, 4))
    n_new = LENGTH - 4
    key = jax.random.key(7)
    for temperature in (0.0, 1.5):
        out = model.generate(prompt, n_new, key=key, temperature=temperature)
        assert out.shape == (BATCH, LENGTH) and out.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(out),
                                      np.asarray(_rerun_decoding(model, prompt, n_new, key, temperature)))
    sampled = model.generate(prompt, n_new, rngs=nnx.Rngs(1), temperature=1.5)
    assert np.array_equal(np.asarray(sampled[:, :4]), np.asarray(prompt))


# ----------------------------------------------------------------------------------------------
# The runner's toy tasks and learning
# ----------------------------------------------------------------------------------------------
def test_models_fit_the_runners_toy_sequence_tasks():
    toy = _toy_tasks()
    classify = toy.SequenceClassificationTask(n_train=8, n_test=4)
    classifier = SequenceModel(2, d_model=16, n_layers=1, mixer=MIXERS["s5"], l_max=classify.max_len, rngs=nnx.Rngs(0))
    classify.check_model(classifier, 4)
    assert jax.eval_shape(classify.loss, classifier, classify.example_batch(4)).shape == ()
    lm_task = toy.NextTokenTask(n_train=8, n_test=4)
    lm = SequenceModel(lm_task.vocab, d_model=16, n_layers=1, mixer=MIXERS["longconv"], vocab_size=lm_task.vocab,
                       head="token", l_max=lm_task.max_len, rngs=nnx.Rngs(0))
    lm_task.check_model(lm, 4)
    assert jax.eval_shape(lm_task.loss, lm, lm_task.example_batch(4)).shape == ()


def _train(model, objective, batches, lr, scored=8):
    """Adam on ``batches`` (fresh examples each step); ``objective(model, batch) -> (loss, correct)``.

    Returns the accuracy over the last ``scored`` batches, each scored inside its training step with
    the parameters from before the update on it (so on examples the model has not trained on), and
    the last loss.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(lr)

    @jax.jit
    def train_step(params, opt_state, batch):
        (loss, correct), grads = jax.value_and_grad(
            lambda p: objective(nnx.merge(graphdef, p, rest), batch), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, jnp.mean(correct)

    opt_state, accuracies = tx.init(params), []
    for batch in batches:
        params, opt_state, loss, accuracy = train_step(params, opt_state, batch)
        accuracies.append(accuracy)
    return float(np.mean(accuracies[-scored:])), float(loss)


def _learn_delayed_copy(mixer, n_layers, lr, steps=150, length=16, vocab=VOCAB, delay=2):
    """Train y_i = x_{i - delay} (needs memory of the past) with plain optax; held-out accuracy."""
    model = SequenceModel(vocab, d_model=16, n_layers=n_layers, mixer=mixer, vocab_size=vocab, head="token",
                          l_max=length, rngs=nnx.Rngs(0))

    def objective(model, tokens):
        logits, targets = model(tokens)[:, delay:], tokens[:, :-delay]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        return loss, jnp.argmax(logits, -1) == targets

    rng = np.random.default_rng(0)
    batches = (jnp.asarray(rng.integers(0, vocab, (32, length)), jnp.int32) for _ in range(steps))
    return _train(model, objective, batches, lr)


@pytest.mark.parametrize("mixer, n_layers, lr", [(functools.partial(S5, d_state=16), 2, 1e-2),
                                                 (functools.partial(LongConv), 1, 2e-2)], ids=["s5", "longconv"])
def test_learns_a_delayed_copy(mixer, n_layers, lr):
    accuracy, loss = _learn_delayed_copy(mixer, n_layers, lr)
    assert accuracy > 0.9, (accuracy, loss)  # chance is 1/6; a memoryless model cannot beat it


def _learn_assoc_recall(gate, steps=200, vocab=10, input_seq_len=16, lr=1e-2):
    """Associative recall (experiments.data.synthetics, fresh examples each step) by next-token
    training of one block with plain optax; the held-out accuracy on the answer (the last token)."""
    from experiments.data.synthetics import assoc_recall_examples

    rng = np.random.default_rng(0)
    length = assoc_recall_examples(rng, 1, vocab, input_seq_len).shape[1] - 1
    model = SequenceModel(vocab, d_model=32, n_layers=1, mixer=functools.partial(LongConv, lam=0.0),
                          vocab_size=vocab, head="token", l_max=length, gate=gate, rngs=nnx.Rngs(0))

    def objective(model, seq):
        logits = model(seq[:, :-1])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, seq[:, 1:]).mean()
        return loss, jnp.argmax(logits[:, -1], -1) == seq[:, -1]

    batches = (jnp.asarray(assoc_recall_examples(rng, 64, vocab, input_seq_len), jnp.int32) for _ in range(steps))
    return _train(model, objective, batches, lr)


@pytest.mark.slow  # a training to high accuracy (~25 s of CPU)
def test_the_hyena_gate_learns_associative_recall():
    """The gate's products (k * v binds a value to its key, q * reads the sum by the query) solve
    in-context recall (4 keys, 8 pairs) in one block: chance is 1/4, and the plain block stays far below."""
    gated, loss = _learn_assoc_recall("hyena")
    plain, _ = _learn_assoc_recall("none")
    assert gated > 0.9, (gated, loss)
    assert plain < gated - 0.2, (plain, gated)
