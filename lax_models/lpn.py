"""Learned proximal networks: a denoiser that is exactly the proximal operator of a learned regularizer.

Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024
(arXiv 2310.14344; code ZhenghanFang/learned-proximal-networks).

A map is the proximal operator of *some* (possibly nonconvex) function iff it is the gradient of a
convex function (Gribonval & Nikolova). An LPN is therefore

.. math::
    f_\\theta(y) = \\nabla\\psi_\\theta(y), \\qquad
    \\psi_\\theta(y) = w_L^\\top z_L + h_L^\\top y + b_L + \\tfrac{\\alpha}{2}\\|y\\|^2,

with the input-convex network (ICNN) recursion

.. math::
    z_1 = g(W_0 y), \\qquad z_{k+1} = g(W_k z_k + H_k y + b_k), \\quad W_k \\ge 0,\\ w_L \\ge 0,

and ``g(t) = softplus(beta t) / beta`` (smooth, convex, non-decreasing), so psi is convex and ``f`` is
``prox_R`` of the learned regularizer

.. math::
    R_\\theta(x) = \\langle y^*, x\\rangle - \\tfrac12\\|x\\|^2 - \\psi_\\theta(y^*)
                 = \\psi_\\theta^*(x) - \\tfrac12\\|x\\|^2, \\qquad
    y^* = \\arg\\min_y\\ \\psi_\\theta(y) - \\langle x, y\\rangle \\ (\\nabla\\psi_\\theta(y^*) = x),

(+inf off the image of ``f``). The weights marked :class:`ConvexWeight` (the W_k, w_L) must stay
non-negative: training projects them onto [0, inf) after every optimizer step (the runner's parameter
group ``{variable_type: lax_models.lpn.ConvexWeight, projection: non_negative}``), as the reference's
``wclip()``; they start tiny and positive, ``exp(N(-10, 0.1))``, as the reference's ``init_weights``.

Two variants: :class:`LPN` on vectors (B, dim) (the 1-D Laplacian toy) and :class:`ConvLPN` on images
(B, H, W, C) (convolutions with strides, the skip path reading ``y`` bilinearly resized to each layer's
resolution, a dense head). Note the reference code adds alpha ||y||^2; here the term is alpha / 2
||y||^2, so the Jacobian of ``f`` has eigenvalues >= alpha (the reference's alpha is half of ours).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["ConvLPN", "ConvexWeight", "LPN", "conjugate_argmin", "scaled_softplus"]


class ConvexWeight(nnx.Param):
    """A weight on the hidden path of an ICNN: must stay >= 0 (projected after every optimizer step)."""


def scaled_softplus(t: jax.Array, beta: float) -> jax.Array:
    """``softplus(beta t) / beta``: a smooth convex non-decreasing activation (-> relu as beta -> inf)."""
    return jax.nn.softplus(beta * t) / beta


def _init_rng(rngs: nnx.Rngs) -> np.random.Generator:
    """A NumPy generator seeded from the ``params`` stream (one draw; the init itself runs in NumPy)."""
    seed = np.asarray(jax.random.key_data(rngs.params())).ravel()
    return np.random.default_rng([int(v) for v in seed])


def _uniform(rng: np.random.Generator, shape, fan_in: int) -> jax.Array:
    """torch's default Linear / Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jnp.asarray(rng.uniform(-bound, bound, shape), jnp.float32)


def _log_normal(rng: np.random.Generator, shape, mean: float, std: float) -> jax.Array:
    """exp(N(mean, std)): the reference's tiny positive init of the non-negative weights."""
    return jnp.asarray(np.exp(rng.normal(mean, std, shape)), jnp.float32)


def _check_rank(name: str, y: jax.Array, rank: int, what: str) -> None:
    if y.ndim != rank:
        raise ValueError(f"{name} takes {what}, got an array of shape {y.shape}")


class _ProxMixin:
    """prox = grad psi, and the regularizer by the conjugate problem; subclasses define ``psi``."""

    alpha: float

    def psi(self, y: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, y: jax.Array) -> jax.Array:
        """The proximal operator f(y) = grad psi(y), batched: each example's gradient (same shape as y)."""
        return jax.grad(lambda v: jnp.sum(self.psi(v)))(y)

    def regularizer(self, x: jax.Array, y0: jax.Array | None = None, *, max_steps: int = 500,
                    tol: float = 1e-5) -> tuple[jax.Array, jax.Array, jax.Array]:
        """R(x) for a batch ``x`` (same layout as the model's input), by the convex conjugate problem.

        Solves ``y* = argmin_y psi(y) - <x, y>`` per example with L-BFGS (``conjugate_argmin``), started
        at ``y0`` (default ``x``), then ``R(x) = <y*, x> - ||x||^2 / 2 - psi(y*)``.

        Returns:
          ``(R, y_star, residual)``: R (B,), y* (like x), and the inversion residual
          ``||f(y*) - x||`` (B,), which says how far x is from the image of f (or how well it solved).
        """

        def psi_one(y):
            return self.psi(y[None])[0]

        y_star = jax.vmap(lambda xi, yi: conjugate_argmin(psi_one, xi, yi, max_steps=max_steps, tol=tol))(
            x, x if y0 is None else y0)
        flat = lambda a: a.reshape(a.shape[0], -1)                           # (B, n)
        r = jnp.sum(flat(y_star) * flat(x), -1) - 0.5 * jnp.sum(flat(x) ** 2, -1) - self.psi(y_star)
        residual = jnp.linalg.norm(flat(self(y_star) - x), axis=-1)
        return r, y_star, residual

    def regularizer_at_prox(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(x, R(x))`` for ``x = f(y)``: the closed form ``R(f(y)) = <y, f(y)> - ||f(y)||^2 / 2 - psi(y)``."""
        x = self(y)
        flat = lambda a: a.reshape(a.shape[0], -1)
        r = jnp.sum(flat(y) * flat(x), -1) - 0.5 * jnp.sum(flat(x) ** 2, -1) - self.psi(y)
        return x, r


def conjugate_argmin(psi: Callable[[jax.Array], jax.Array], x: jax.Array, y0: jax.Array, *,
                     max_steps: int = 500, tol: float = 1e-5) -> jax.Array:
    """``argmin_y psi(y) - <x, y>`` for one example (any shape), by L-BFGS with a zoom line search.

    The problem is convex (strongly so when alpha > 0); its minimiser satisfies grad psi(y*) = x. Stops
    when the gradient norm ``||grad psi(y) - x||`` is below ``tol`` or after ``max_steps`` steps.
    """

    def objective(y):
        return psi(y) - jnp.vdot(x, y)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        y, state, _ = carry
        value, grad = value_and_grad(y, state=state)
        updates, state = opt.update(grad, state, y, value=value, grad=grad, value_fn=objective)
        return optax.apply_updates(y, updates), state, jnp.linalg.norm(grad)

    def keep_going(carry):
        _, state, grad_norm = carry
        return (optax.tree.get(state, "count") < max_steps) & (grad_norm > tol)

    init = (y0, opt.init(y0), jnp.asarray(jnp.inf, y0.dtype))
    y, _, _ = jax.lax.while_loop(keep_going, step, init)
    return y


class LPN(_ProxMixin, nnx.Module):
    """A learned proximal network on vectors: (B, dim) -> (B, dim) (the 1-D Laplacian experiment).

    Args:
      dim: length of the input vectors.
      hidden: width of the hidden layers (reference 1-D network: 50).
      n_layers: number of hidden layers z_1..z_L (reference: 4 hidden + input and output Linear).
      beta: softplus sharpness (reference: 10).
      alpha: strength of the alpha / 2 ||y||^2 term (reference 1-D network: none, 0).
      init_log_mean, init_log_std: the non-negative weights start at exp(N(mean, std)).
      rngs: NNX random streams (``params``).
    """

    def __init__(self, dim: int = 1, hidden: int = 50, n_layers: int = 4, beta: float = 10.0,
                 alpha: float = 0.0, init_log_mean: float = -10.0, init_log_std: float = 0.1, *,
                 rngs: nnx.Rngs):
        if min(dim, hidden, n_layers) < 1:
            raise ValueError(f"LPN needs dim, hidden and n_layers >= 1, got {dim}, {hidden}, {n_layers}")
        if beta <= 0 or alpha < 0:
            raise ValueError(f"LPN needs beta > 0 and alpha >= 0, got beta={beta}, alpha={alpha}")
        self.dim, self.hidden, self.n_layers, self.beta, self.alpha = dim, hidden, n_layers, beta, alpha
        k = _init_rng(rngs)
        self.w_in = nnx.Param(_uniform(k, (dim, hidden), dim))                       # W_0, no bias
        self.w_hidden = ConvexWeight(_log_normal(k, (n_layers - 1, hidden, hidden), init_log_mean,
                                                 init_log_std))                        # W_k >= 0
        self.h_skip = nnx.Param(_uniform(k, (n_layers - 1, dim, hidden), dim))       # H_k
        self.b_skip = nnx.Param(_uniform(k, (n_layers - 1, hidden), dim))            # b_k
        self.w_out = ConvexWeight(_log_normal(k, (hidden,), init_log_mean, init_log_std))   # w_L >= 0
        self.h_out = nnx.Param(_uniform(k, (dim,), dim))
        self.b_out = nnx.Param(jnp.zeros((), jnp.float32))

    def psi(self, y: jax.Array) -> jax.Array:
        """The convex potential: (B, dim) -> (B,)."""
        _check_rank("LPN", y, 2, f"vectors of shape (batch, {self.dim})")
        if y.shape[-1] != self.dim:
            raise ValueError(f"LPN was built for dim={self.dim}, got inputs of shape {y.shape}")
        g = lambda t: scaled_softplus(t, self.beta)
        z = g(y @ self.w_in[...])                                                      # (B, hidden)
        for k in range(self.n_layers - 1):
            z = g(z @ self.w_hidden[k] + y @ self.h_skip[k] + self.b_skip[k])
        out = z @ self.w_out[...] + y @ self.h_out[...] + self.b_out[...]              # (B,)
        return out + 0.5 * self.alpha * jnp.sum(y * y, -1)


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """2-D convolution, "SAME" padding: x (B, H, W, Cin), kernel (k, k, Cin, Cout) -> (B, H/s, W/s, Cout)."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ConvLPN(_ProxMixin, nnx.Module):
    """A convolutional learned proximal network on images: (B, H, W, C) -> (B, H, W, C).

    The reference MNIST network (lpn_mnist.py) at any size: ``len(strides)`` 3x3 convolutions of
    ``hidden`` channels (the first unconstrained, the rest with non-negative kernels), each but the first
    with a skip convolution of ``y`` resized (bilinearly, a linear map) to that layer's resolution; then
    a dense layer (non-negative) from the flattened features to ``hidden`` with a dense skip from ``y``,
    and a non-negative dense layer to the scalar, plus a linear term in ``y`` and alpha / 2 ||y||^2.

    Args:
      image_size: H = W of the inputs (the dense head depends on it).
      in_channels: C.
      hidden: channels of the convolutions and width of the dense layer (reference MNIST: 64).
      strides: one stride per convolution (reference MNIST: 1, 2, 1, 2).
      kernel_size: of the convolutions (3).
      beta: softplus sharpness (reference: 10).
      alpha: strength of alpha / 2 ||y||^2 (reference MNIST: alpha ||y||^2 with 0.01, i.e. 0.02 here).
      init_log_mean, init_log_std: the non-negative weights start at exp(N(mean, std)).
      rngs: NNX random streams (``params``).
    """

    def __init__(self, image_size: int = 16, in_channels: int = 1, hidden: int = 32,
                 strides: Sequence[int] = (1, 2, 1, 2), kernel_size: int = 3, beta: float = 10.0,
                 alpha: float = 0.02, init_log_mean: float = -10.0, init_log_std: float = 0.1, *,
                 rngs: nnx.Rngs):
        strides = tuple(int(s) for s in strides)
        if not strides or min(strides) < 1 or min(image_size, in_channels, hidden, kernel_size) < 1:
            raise ValueError(f"ConvLPN needs positive image_size, in_channels, hidden, kernel_size and at "
                             f"least one stride >= 1, got {image_size}, {in_channels}, {hidden}, "
                             f"{kernel_size}, {strides}")
        if beta <= 0 or alpha < 0:
            raise ValueError(f"ConvLPN needs beta > 0 and alpha >= 0, got beta={beta}, alpha={alpha}")
        self.image_size, self.in_channels, self.hidden = image_size, in_channels, hidden
        self.strides, self.kernel_size, self.beta, self.alpha = strides, kernel_size, beta, alpha
        sizes, s = [], image_size
        for st in strides:
            s = -(-s // st)                          # "SAME" convolution: ceil(size / stride)
            sizes.append(s)
        self.sizes = tuple(sizes)                    # spatial size after each convolution
        n, c, kk = len(strides), in_channels, kernel_size
        k = _init_rng(rngs)
        self.conv_in = nnx.Param(_uniform(k, (kk, kk, c, hidden), kk * kk * c))         # W_0 (HWIO)
        self.b_in = nnx.Param(jnp.zeros((hidden,), jnp.float32))
        self.conv_hidden = ConvexWeight(_log_normal(k, (n - 1, kk, kk, hidden, hidden), init_log_mean,
                                                    init_log_std))                       # W_k >= 0
        self.conv_skip = nnx.Param(_uniform(k, (n - 1, kk, kk, c, hidden), kk * kk * c))   # H_k
        self.b_skip = nnx.Param(jnp.zeros((n - 1, hidden), jnp.float32))
        flat = sizes[-1] ** 2 * hidden
        self.dense = ConvexWeight(_log_normal(k, (flat, hidden), init_log_mean, init_log_std))
        n_in = image_size ** 2 * c
        self.dense_skip = nnx.Param(_uniform(k, (n_in, hidden), n_in))
        self.b_dense = nnx.Param(jnp.zeros((hidden,), jnp.float32))
        self.w_out = ConvexWeight(_log_normal(k, (hidden,), init_log_mean, init_log_std))
        self.h_out = nnx.Param(jnp.zeros((n_in,), jnp.float32))
        self.b_out = nnx.Param(jnp.zeros((), jnp.float32))

    def psi(self, y: jax.Array) -> jax.Array:
        """The convex potential: (B, H, W, C) -> (B,)."""
        want = (self.image_size, self.image_size, self.in_channels)
        _check_rank("ConvLPN", y, 4, f"images of shape (batch, {', '.join(map(str, want))})")
        if y.shape[1:] != want:
            raise ValueError(f"ConvLPN was built for images of shape {want} (image_size, in_channels), "
                             f"got a batch of shape {y.shape}")
        g = lambda t: scaled_softplus(t, self.beta)
        batch = y.shape[0]
        z = g(_conv(y, self.conv_in[...], self.strides[0]) + self.b_in[...])   # (B, s1, s1, hidden)
        for k, (stride, size) in enumerate(zip(self.strides[1:], self.sizes[1:])):
            y_k = jax.image.resize(y, (batch, size, size, self.in_channels), "linear")   # linear in y
            z = g(_conv(z, self.conv_hidden[k], stride) + _conv(y_k, self.conv_skip[k], 1) + self.b_skip[k])
        y_flat = y.reshape(batch, -1)                                          # (B, H * W * C)
        z = g(z.reshape(batch, -1) @ self.dense[...] + y_flat @ self.dense_skip[...] + self.b_dense[...])
        out = z @ self.w_out[...] + y_flat @ self.h_out[...] + self.b_out[...]      # (B,)
        return out + 0.5 * self.alpha * jnp.sum(y_flat * y_flat, -1)
