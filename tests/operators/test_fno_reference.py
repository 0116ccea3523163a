"""FNO end to end against a NumPy transcription of ``FNO2d.forward`` of the original Darcy script.

The oracle is ``fourier_2d.py`` of zongyi-li/fourier_neural_operator (commit 4d3e0c32, 2022-06-21,
the last version of the classic scripts), written again in NumPy on its own (channels-first) layout:
grid channels appended to the input, ``fc0``, ``F.pad(x, [0, 9, 0, 9])``, four Fourier layers
``x = conv(x) + w(x)`` with GELU after the first three, the padding cropped, ``fc1``, GELU, ``fc2``;
``SpectralConv2d`` multiplies ``rfft2(x)[:, :, :m1, :m2]`` by ``weights1`` and
``rfft2(x)[:, :, -m1:, :m2]`` by ``weights2`` with ``einsum("bixy,ioxy->boxy")``.

The weights are drawn in the reference's PyTorch layout (a state dict) and loaded into
``operators.fno.FNO`` through an explicit map, so the test also pins how a checkpoint of the script
would be read.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators.fno import FNO

S, WIDTH, MODES, PAD, PROJ = 16, 8, 4, 9, 128  # grid, width, modes1 = modes2, padding cells, fc1 width

_erf = np.vectorize(math.erf)


def torch_gelu(x: np.ndarray) -> np.ndarray:
    """``F.gelu`` (exact): ``x / 2 (1 + erf(x / sqrt 2))``."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``nn.Linear`` on the last axis: ``x W^T + b`` with ``W`` of shape (out, in)."""
    return x @ weight.T + bias


def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``nn.Conv2d(c, c, 1)`` on ``(B, C, H, W)``: weight ``(out, in, 1, 1)``."""
    return np.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x) + bias[None, :, None, None]


def spectral_conv2d(x: np.ndarray, weights1: np.ndarray, weights2: np.ndarray, m1: int, m2: int) -> np.ndarray:
    """``SpectralConv2d.forward`` on ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    out_c = weights1.shape[1]
    x_ft = np.fft.rfft2(x)  # over the last two axes, "backward" norm: (B, in, H, W//2 + 1)
    out_ft = np.zeros((b, out_c, h, w // 2 + 1), dtype=np.complex128)
    out_ft[:, :, :m1, :m2] = np.einsum("bixy,ioxy->boxy", x_ft[:, :, :m1, :m2], weights1)
    out_ft[:, :, -m1:, :m2] = np.einsum("bixy,ioxy->boxy", x_ft[:, :, -m1:, :m2], weights2)
    return np.fft.irfft2(out_ft, s=(h, w))


def get_grid(batch: int, size_x: int, size_y: int) -> np.ndarray:
    gridx = np.tile(np.linspace(0, 1, size_x).reshape(1, size_x, 1, 1), (batch, 1, size_y, 1))
    gridy = np.tile(np.linspace(0, 1, size_y).reshape(1, 1, size_y, 1), (batch, size_x, 1, 1))
    return np.concatenate([gridx, gridy], axis=-1)


def reference_fno2d(sd: dict, x: np.ndarray) -> np.ndarray:
    """``FNO2d.forward``: ``x`` is ``(B, s, s, 1)``, returns ``(B, s, s, 1)``."""
    x = np.concatenate([x, get_grid(*x.shape[:3])], axis=-1)  # (B, s, s, 3)
    x = linear(x, sd["fc0.weight"], sd["fc0.bias"])
    x = x.transpose(0, 3, 1, 2)  # (B, width, s, s)
    x = np.pad(x, ((0, 0), (0, 0), (0, PAD), (0, PAD)))  # F.pad(x, [0, 9, 0, 9])
    for layer in range(4):
        x1 = spectral_conv2d(x, sd[f"conv{layer}.weights1"], sd[f"conv{layer}.weights2"], MODES, MODES)
        x2 = conv1x1(x, sd[f"w{layer}.weight"], sd[f"w{layer}.bias"])
        x = x1 + x2
        if layer < 3:
            x = torch_gelu(x)
    x = x[..., :-PAD, :-PAD]
    x = x.transpose(0, 2, 3, 1)  # (B, s, s, width)
    x = torch_gelu(linear(x, sd["fc1.weight"], sd["fc1.bias"]))
    return linear(x, sd["fc2.weight"], sd["fc2.bias"])


def reference_state_dict(seed: int = 0) -> dict:
    """Random weights in the script's layout (not its init: every entry, biases too, is nonzero)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape, scale=0.3: scale * rng.normal(size=shape)  # noqa: E731
    sd = {"fc0.weight": normal(WIDTH, 3), "fc0.bias": normal(WIDTH),
          "fc1.weight": normal(PROJ, WIDTH), "fc1.bias": normal(PROJ),
          "fc2.weight": normal(1, PROJ), "fc2.bias": normal(1)}
    for layer in range(4):
        for name in ("weights1", "weights2"):
            shape = (WIDTH, WIDTH, MODES, MODES)
            sd[f"conv{layer}.{name}"] = normal(*shape, scale=0.05) + 1j * normal(*shape, scale=0.05)
        sd[f"w{layer}.weight"] = normal(WIDTH, WIDTH, 1, 1)
        sd[f"w{layer}.bias"] = normal(WIDTH)
    return sd


def load_reference(model: FNO, sd: dict, dtype) -> None:
    """The script's state dict -> our parameters, one to one."""
    def put(module, name, array):
        setattr(module, name, nnx.Param(jnp.asarray(array, dtype)))

    put(model.fc0, "kernel", sd["fc0.weight"].T)  # Linear: (out, in) -> kernel (in, out)
    put(model.fc0, "bias", sd["fc0.bias"])
    for layer in range(4):
        # (2, in, out, m1, m2, 2): corner 0 = the low frequencies [:m1] (weights1), corner 1 = the
        # negative ones [-m1:] (weights2); (real, imaginary) on the trailing axis.
        corners = np.stack([sd[f"conv{layer}.weights1"], sd[f"conv{layer}.weights2"]])
        put(model.spectral[layer], "weight", np.stack([corners.real, corners.imag], axis=-1))
        put(model.pointwise[layer], "kernel", sd[f"w{layer}.weight"][:, :, 0, 0].T)  # 1x1 conv (out, in, 1, 1)
        put(model.pointwise[layer], "bias", sd[f"w{layer}.bias"])
    put(model.fc1, "kernel", sd["fc1.weight"].T)
    put(model.fc1, "bias", sd["fc1.bias"])
    put(model.fc2, "kernel", sd["fc2.weight"].T)
    put(model.fc2, "bias", sd["fc2.bias"])


def script_like_fno(impl: str) -> FNO:
    """Our FNO configured as ``FNO2d`` of the script: grid channels on, 9 cells of padding on a grid
    of 16 (the padding is a fraction, ceil(9/16 * 16) = 9), projection 128, 4 layers."""
    return FNO(1, 1, (MODES, MODES), WIDTH, n_layers=4, projection_channels=PROJ, use_grid=True,
               padding=PAD / S, impl=impl, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("impl", ["fft", "dft"])
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_fno_equals_the_original_fno2d_forward(impl, x64):
    sd = reference_state_dict()
    a = np.random.default_rng(1).normal(size=(2, S, S, 1))
    expected = reference_fno2d(sd, a)
    assert expected.shape == (2, S, S, 1)
    dtype = jnp.float64 if x64 else jnp.float32
    with jax.enable_x64(x64):
        model = nnx.eval_shape(lambda: script_like_fno(impl))  # shapes only: every parameter is loaded below
        load_reference(model, sd, dtype)
        graphdef, state = nnx.split(model)
        forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))  # one compile, not op by op
        ours = np.asarray(forward(state, jnp.asarray(a, dtype)))
    assert ours.shape == expected.shape
    tol = 1e-10 if x64 else 1e-5
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(ours, expected, rtol=tol, atol=tol * scale)
    assert scale > 0.1  # a nontrivial output, not everything cancelling


def test_the_state_dict_covers_every_parameter():
    """Every parameter of our script-like FNO is loaded from the script's state dict, no more, no less."""
    model = nnx.eval_shape(lambda: script_like_fno("fft"))
    ours = sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    theirs = sum(v.size * (2 if np.iscomplexobj(v) else 1) for v in reference_state_dict().values())
    assert ours == theirs
