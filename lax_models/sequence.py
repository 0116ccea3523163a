"""Deep sequence model: an encoder, a stack of residual mixer blocks, and a pooled or per-token head.

The block follows the S4 / S5 reference models (``state-spaces/s4:src/models/sequence/backbones``,
``lindermanlab/S5:s5/layers.py``):

    z = LayerNorm(x)                      (pre-norm; post-norm applies it after the residual)
    z = mixer(z)                          (any :class:`Mixer`: S4, S4D, S5, LongConv, ...)
    z = dropout(GELU(z))
    z = GLU(W z) = (W_a z) * sigmoid(W_b z)     (or W z with glu=False)
    x = x + dropout(z)

With ``gate="hyena"`` the mixer line becomes the H3 / Hyena gating ``q, k, v = short_conv(W z)``,
``z = q * mixer(k * v)`` (see :class:`SequenceBlock`).

Dropout masks are shared along the length axis (S5's ``broadcast_dims=[0]``; S4's tied dropout).
With a ``mask``, padded positions are zeroed before every mixer (as safari's ``u = u * mask``), so
that no padding value reaches a real position even through a bidirectional mixer; the pooled head
averages over real positions only.

Recurrent generation (:meth:`SequenceModel.generate`) runs every layer's ``step``: O(1) work per
token in the sequence length for an SSM (O(l_max) for a long convolution), never the full sequence.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Mixer", "check_mixer", "SequenceBlock", "SequenceModel"]


@runtime_checkable
class Mixer(Protocol):
    """The contract of a sequence mixer (``lax_models.ssm``'s layers, ``lax_models.longconv.LongConv``).

    * ``__init__(self, d_model: int, ..., l_max: int | None = None, *, rngs: nnx.Rngs)``: plain
      arguments; ``l_max`` is the longest sequence it will see (a long convolution's kernel length; an
      SSM may ignore it and build its kernel for the length it is called with). :class:`SequenceModel`
      calls its ``mixer`` factory as ``mixer(d_model=..., l_max=..., rngs=...)``.
    * ``__call__(x) -> y``, ``(batch, length, d_model) -> (batch, length, d_model)``: the parallel
      (convolutional or scan) mode used for training.
    * ``init_state(batch_size) -> state`` and ``step(state, x_t) -> (state, y_t)`` with
      ``x_t, y_t: (batch, d_model)``: the recurrent mode used for generation; stepping through a
      sequence gives ``__call__``'s output (tested for every mixer). Only causal mixers step (a
      bidirectional one has the methods and raises a clear error).
    * State-space parameters are :class:`lax_models.ssm.SSMParam` (their own optimizer group).

    ``isinstance(layer, Mixer)`` checks that the three methods exist (not their signatures).
    """

    def __call__(self, x: jax.Array) -> jax.Array: ...

    def init_state(self, batch_size: int) -> Any: ...

    def step(self, state: Any, x_t: jax.Array) -> tuple[Any, jax.Array]: ...


_MIXER_METHODS = ("__call__", "init_state", "step")


def check_mixer(layer: Any, source: Any = None) -> None:
    """Raise a ``TypeError`` naming the missing members unless ``layer`` is a :class:`Mixer`.

    ``source``: what built the layer (the factory), named in the message.
    """
    if isinstance(layer, Mixer):
        return
    missing = [name for name in _MIXER_METHODS if not callable(getattr(layer, name, None))]
    built = f" (built by {source!r})" if source is not None else ""
    raise TypeError(f"the mixer {type(layer).__name__}{built} is not a lax_models.sequence.Mixer: it lacks "
                    f"{', '.join(missing)}; a mixer needs __call__(x), init_state(batch_size) and "
                    f"step(state, x_t) (see lax_models.sequence.Mixer)")


class SequenceBlock(nnx.Module):
    """One residual block: (batch, length, d_model) -> (batch, length, d_model).

    ``gate="none"``: ``x + pointwise(mixer(norm(x)))`` (the S4 / S5 block). ``gate="hyena"``: the
    order-2 data-controlled gating of H3 / Hyena (Poli et al. 2023, arXiv 2302.10866, Sec. 3;
    Fu et al. 2023, H3): ``q, k, v = short_conv(W norm(x))`` (a causal depthwise convolution of
    ``short_conv`` taps over a 3 d_model projection), then ``y = q * mixer(k * v)`` and
    ``x + pointwise(y)``. The products let one layer bind a token to its predecessor (k * v after the
    short convolution) and read a sum over the past with the current token (q *), which associative
    recall needs and a linear mixer followed by a pointwise map cannot express in one layer.
    """

    def __init__(self, d_model: int, mixer: Mixer, *, prenorm: bool = True, glu: bool = True,
                 dropout: float = 0.0, gate: Literal["none", "hyena"] = "none", short_conv: int = 3,
                 rngs: nnx.Rngs) -> None:
        if gate not in ("none", "hyena"):
            raise ValueError(f"gate must be 'none' (the S4 / S5 block) or 'hyena' (q * mixer(k * v)); got {gate!r}")
        if gate == "hyena" and short_conv < 1:
            raise ValueError(f"short_conv (taps of the causal short convolution) must be >= 1; got {short_conv}")
        check_mixer(mixer)
        self.prenorm, self.glu, self.gate = bool(prenorm), bool(glu), gate
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.mixer = mixer
        self.out = nnx.Linear(d_model, 2 * d_model if glu else d_model, rngs=rngs)
        self.drop = nnx.Dropout(dropout, broadcast_dims=(-2,), rngs=rngs)  # one mask per sequence
        if gate == "hyena":
            self.short_conv = int(short_conv)
            self.in_proj = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
            bound = 1.0 / self.short_conv ** 0.5  # PyTorch Conv1d's default (fan_in = taps, depthwise)
            # taps[j] weighs the input j positions back: (short_conv, 3 d_model)
            self.taps = nnx.Param(jax.random.uniform(rngs.params(), (self.short_conv, 3 * d_model),
                                                     minval=-bound, maxval=bound))

    def _pointwise(self, z: jax.Array) -> jax.Array:
        """GELU, dropout, then GLU(W z) or W z, then dropout: (..., d_model) -> (..., d_model)."""
        z = self.drop(jax.nn.gelu(z, approximate=False))
        z = self.out(z)
        if self.glu:
            a, b = jnp.split(z, 2, axis=-1)  # (..., d_model) each
            z = a * jax.nn.sigmoid(b)
        return self.drop(z)

    def _short_conv(self, u: jax.Array) -> jax.Array:
        """Causal depthwise convolution over the length axis: (batch, length, 3 d_model) -> same."""
        w, length = self.short_conv, u.shape[1]
        padded = jnp.pad(u, ((0, 0), (w - 1, 0), (0, 0)))
        return sum(self.taps[j] * padded[:, w - 1 - j: w - 1 - j + length] for j in range(w))

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        z = self.norm(x) if self.prenorm else x
        m = None if mask is None else mask[..., None].astype(z.dtype)  # (batch, length, 1)
        if m is not None:
            z = z * m  # padding -> 0
        if self.gate == "hyena":
            q, k, v = jnp.split(self._short_conv(self.in_proj(z)), 3, axis=-1)
            kv = k * v if m is None else k * v * m  # no padding value reaches the mixer
            y = q * self.mixer(kv)
        else:
            y = self.mixer(z)
        x = x + self._pointwise(y)
        return x if self.prenorm else self.norm(x)

    def init_state(self, batch_size: int) -> Any:
        """The mixer's state (and, gated, the last ``short_conv - 1`` projected inputs)."""
        if self.gate == "hyena":
            buf = jnp.zeros((batch_size, self.short_conv - 1, self.taps.shape[-1]), jnp.float32)
            return self.mixer.init_state(batch_size), buf
        return self.mixer.init_state(batch_size)

    def step(self, state: Any, x_t: jax.Array) -> tuple[Any, jax.Array]:
        """The block at one position, ``x_t``: (batch, d_model) -> (state, (batch, d_model))."""
        z = self.norm(x_t) if self.prenorm else x_t
        if self.gate == "hyena":
            mixer_state, buf = state
            window = jnp.concatenate([buf, self.in_proj(z)[:, None].astype(buf.dtype)], axis=1)  # (batch, w, 3d)
            q, k, v = jnp.split(self._short_conv(window)[:, -1], 3, axis=-1)  # the window's last position
            mixer_state, y = self.mixer.step(mixer_state, k * v)
            state, y = (mixer_state, window[:, 1:]), q * y
        else:
            state, y = self.mixer.step(state, z)
        x_t = x_t + self._pointwise(y)
        return state, (x_t if self.prenorm else self.norm(x_t))


class SequenceModel(nnx.Module):
    """Encoder, ``n_layers`` residual mixer blocks, and a head.

    Args:
        d_output: classes (``head="pool"``) or the output vocabulary (``head="token"``).
        d_model: width H of every block.
        n_layers: number of blocks.
        mixer: (required, keyword) a factory called as ``mixer(d_model=d_model, l_max=l_max,
            rngs=rngs)`` once per layer, e.g. ``functools.partial(S5, d_state=64)`` or a
            ``_partial_: true`` config node; what it returns must be a :class:`Mixer` (checked:
            ``TypeError`` naming the missing methods).
        vocab_size: if set, inputs are int tokens (batch, length) and the encoder is an embedding;
            otherwise inputs are floats (batch, length, d_input) and the encoder is linear.
        d_input: features per position of float inputs ((batch, length) is read as d_input = 1).
        head: "pool" -> logits (batch, d_output) from pooled features; "token" -> logits
            (batch, length, d_output) at every position (causal language modelling with a causal mixer).
        pooling: "mean" (over real positions, given the mask) or "last" (the last real position).
        prenorm: LayerNorm before the mixer (and a final LayerNorm before the head) or after the residual.
        dropout: rate of the block's dropouts (off in eval mode).
        glu: GELU then a GLU output projection (d_model -> 2 d_model, halves gated) if True, else
            GELU then a linear map.
        l_max: the longest sequence, passed to the mixers (a long convolution's kernel length).
        gate: "none" (the S4 / S5 block) or "hyena": every block computes ``q * mixer(k * v)`` from a
            short causal convolution of a projection (H3 / Hyena gating; see :class:`SequenceBlock`),
            what in-context recall needs.
        short_conv: taps of that short convolution (gate="hyena" only).

    Call: ``model(x, mask=None)``; ``mask`` (batch, length) bool is True at real positions.
    """

    def __init__(
        self,
        d_output: int,
        d_model: int = 128,
        n_layers: int = 4,
        *,
        mixer: Callable[..., nnx.Module],
        vocab_size: int | None = None,
        d_input: int = 1,
        head: Literal["pool", "token"] = "pool",
        pooling: Literal["mean", "last"] = "mean",
        prenorm: bool = True,
        dropout: float = 0.0,
        glu: bool = True,
        l_max: int | None = None,
        gate: Literal["none", "hyena"] = "none",
        short_conv: int = 3,
        rngs: nnx.Rngs,
    ) -> None:
        if head not in ("pool", "token"):
            raise ValueError(f"head must be 'pool' (classification) or 'token' (per-token logits); got {head!r}")
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last'; got {pooling!r}")
        if n_layers < 1 or d_model < 1 or d_output < 1:
            raise ValueError(f"need d_output, d_model, n_layers >= 1; got {d_output}, {d_model}, {n_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.d_output, self.d_model, self.n_layers = int(d_output), int(d_model), int(n_layers)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.d_input, self.head, self.pooling = int(d_input), head, pooling
        self.prenorm, self.l_max = bool(prenorm), l_max
        if self.vocab_size is not None:
            self.encoder = nnx.Embed(self.vocab_size, self.d_model, rngs=rngs)
        else:
            self.encoder = nnx.Linear(self.d_input, self.d_model, rngs=rngs)
        if isinstance(mixer, nnx.Module) or not callable(mixer):
            raise ValueError(f"mixer must be a factory called as mixer(d_model=..., l_max=..., rngs=...) once "
                             f"per layer, e.g. functools.partial(S5, d_state=64), not a built layer; got "
                             f"{type(mixer).__name__}")
        blocks = []
        for _ in range(self.n_layers):
            layer = mixer(d_model=self.d_model, l_max=l_max, rngs=rngs)
            check_mixer(layer, mixer)
            blocks.append(SequenceBlock(self.d_model, layer, prenorm=prenorm, glu=glu, dropout=dropout, gate=gate,
                                        short_conv=short_conv, rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.final_norm = nnx.LayerNorm(self.d_model, rngs=rngs) if self.prenorm else None
        self.decoder = nnx.Linear(self.d_model, self.d_output, rngs=rngs)

    # -- input -------------------------------------------------------------------------------------
    def _encode(self, x: jax.Array) -> jax.Array:
        """Tokens (batch, length) or features (batch, length, d_input) -> (batch, length, d_model)."""
        if self.vocab_size is not None:
            if not jnp.issubdtype(x.dtype, jnp.integer) or x.ndim != 2:
                raise ValueError(f"this model embeds tokens (vocab_size={self.vocab_size}): its input must "
                                 f"be integers of shape (batch, length); got {x.dtype} {tuple(x.shape)}")
            return self.encoder(x)
        if jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"integer input {tuple(x.shape)} but the model has no vocabulary: set "
                             f"vocab_size to embed tokens, or give float features (batch, length, d_input)")
        if x.ndim == 2 and self.d_input == 1:
            x = x[..., None]  # (batch, length, 1)
        if x.ndim != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"float input must be (batch, length, d_input={self.d_input}); got shape "
                             f"{tuple(x.shape)}")
        return self.encoder(x)

    def features(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """The last block's output (after the final norm): (batch, length, d_model)."""
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be (batch, length) = {tuple(x.shape[:2])}; got {tuple(mask.shape)}")
        h = self._encode(x)
        for block in self.blocks:
            h = block(h, mask)
        return self.final_norm(h) if self.final_norm is not None else h

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Logits: (batch, d_output) for ``head="pool"``, (batch, length, d_output) for ``"token"``."""
        h = self.features(x, mask)                                    # (batch, length, d_model)
        if self.head == "token":
            return self.decoder(h)                                    # (batch, length, d_output)
        if self.pooling == "last":
            last = (h.shape[1] - 1 if mask is None
                    else jnp.maximum(jnp.sum(mask, axis=1) - 1, 0))   # (batch,) or scalar
            pooled = jnp.take_along_axis(h, jnp.broadcast_to(last, h.shape[:1])[:, None, None], axis=1)[:, 0]
        elif mask is None:
            pooled = jnp.mean(h, axis=1)                              # (batch, d_model)
        else:
            w = mask[..., None].astype(h.dtype)                       # (batch, length, 1)
            pooled = jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return self.decoder(pooled)                                   # (batch, d_output)

    # -- recurrent mode --------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> list:
        """Every layer's mixer state."""
        return [block.init_state(batch_size) for block in self.blocks]

    def step(self, state: list, x_t: jax.Array) -> tuple[list, jax.Array]:
        """One position: token (batch,) int or features (batch, d_input) -> (state, logits (batch, d_output))."""
        h = self._encode(x_t[:, None])[:, 0]                          # (batch, d_model)
        new_state = []
        for block, s in zip(self.blocks, state):
            s, h = block.step(s, h)
            new_state.append(s)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return new_state, self.decoder(h)

    def generate(self, prompt: jax.Array, n_new: int, *, key: jax.Array | None = None,
                 rngs: nnx.Rngs | None = None, temperature: float = 1.0) -> jax.Array:
        """Continue ``prompt`` (batch, L0) int by ``n_new`` tokens: (batch, L0 + n_new).

        The prompt and then each new token go through every layer's recurrent ``step`` (the model is
        never re-run on the whole sequence). New token i (0-based) is drawn as
        ``jax.random.categorical(keys[i], logits / temperature)`` with
        ``keys = jax.random.split(key, n_new)``; ``temperature=0`` is greedy (argmax, no key needed).
        ``key`` or ``rngs`` (one key drawn from its default stream) gives the randomness. Runs in
        eval mode (no dropout) on a copy; the model itself is not changed.
        """
        if self.head != "token" or self.vocab_size is None:
            raise ValueError("generate needs a token language model: vocab_size set and head='token'")
        prompt = jnp.asarray(prompt)
        if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer) or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be int tokens of shape (batch, L0) with L0 >= 1; got "
                             f"{prompt.dtype} {tuple(prompt.shape)}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
        if int(n_new) < 0:
            raise ValueError(f"n_new must be >= 0; got {n_new}")
        greedy = temperature == 0
        if key is None:
            if rngs is None and not greedy:
                raise ValueError("sampling (temperature > 0) needs key= or rngs=; use temperature=0 for greedy")
            key = rngs() if rngs is not None else jax.random.key(0)
        graphdef, params = nnx.split(self)
        return _generate(graphdef, params, prompt.astype(jnp.int32), key, int(n_new),
                         jnp.asarray(temperature, jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(graphdef, params, prompt, key, n_new, temperature):
    """Prompt through ``step``, then ``n_new`` sampled tokens; ``temperature`` is traced (0 = greedy)."""
    model = nnx.merge(graphdef, params)
    model.eval()
    if n_new == 0:
        return prompt

    def feed(state, token):  # token: (batch,)
        return model.step(state, token)

    state, logits = jax.lax.scan(feed, model.init_state(prompt.shape[0]), prompt.T)  # over positions
    scale = jnp.where(temperature > 0, temperature, 1.0)

    def sample(carry, k):
        state, logits = carry                                                    # logits: (batch, vocab)
        drawn = jax.random.categorical(k, logits / scale, axis=-1)
        token = jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        return model.step(state, token), token

    _, new = jax.lax.scan(sample, (state, logits[-1]), jax.random.split(key, n_new))  # new: (n_new, batch)
    return jnp.concatenate([prompt, new.T], axis=1)
