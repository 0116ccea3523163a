"""Learning a proximal operator from noisy samples: the training task of learned proximal networks.

Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024
(arXiv 2310.14344), Sec. 3-4; the loss and its gamma schedule as github.com/ZhenghanFang/learned-proximal-networks
(``lpn/utils/utils.py``, ``lpn/train.py``; the 1-D schedule in ``exps/laplacian/laplacian_train.ipynb``).

Clean signals ``x`` come from a *signal source* and are corrupted as ``y = x + sigma * eps``,
``eps ~ N(0, I)``; the model (an LPN, ``lax_models.lpn``) maps ``y`` to an estimate of ``x`` of the same
shape. Training batches are drawn afresh at every step from ``(seed, step)`` (new Laplace samples, or
random training images with new noise), so a resumed run replays them exactly. The loss per example:

* ``"l2"``: mean squared error (learns the MMSE estimator E[x | y]);
* ``"l1"``: mean absolute error (learns the posterior median);
* ``"proximal_matching"``: ``pretrain_steps`` steps of the l1 loss, then the proximal-matching loss

  .. math:: \\ell_\\gamma(f(y), x) = 1 - \\exp\\big(-\\|f(y) - x\\|_2^2 / \\gamma^2\\big)

  (the l2 norm over the whole example) with gamma decreasing in stages of ``stage_steps`` steps
  through ``gammas`` (the last one holds to the end). As gamma -> 0 its minimiser tends to the MAP
  denoiser ``prox_{-sigma^2 log p}``, so the learned regularizer recovers ``-sigma^2 log p`` up to a
  constant. The reference ladder (``gammas`` null) is ``gamma_min * (8, 4, 2, 1)`` with
  ``gamma_min = 0.08 sqrt(n)``, n the number of entries of one example.

The batch carries the step's ``gamma`` and whether the step is a proximal-matching step (``pm``), one
value per row, so the loss stays a pure function of ``(model, batch)``. The learning-rate drop of the
reference (1e-3 for the l1 pre-training, 1e-4 after) comes from the schedule group (``schedule=step``).

Sources (``experiments.data``; the signal-source contract is in ``experiments.data.signals``):

* ``experiments.data.signals.LaplaceSignals``: i.i.d. Laplace(0, b) vectors (the 1-D toy: b = 1,
  sigma = 1, whose MAP denoiser is soft thresholding at sigma^2 / b and regularizer sigma^2 / b |x|).
  Evaluation splits "test" (Laplace samples, noisy) and "grid" (y on [-grid_max, grid_max] against the
  soft threshold: the error to the true prox; the objective, ``prox_mae``).
* ``experiments.data.images.DigitImages``: scikit-learn's bundled 8x8 digits (no download) upsampled
  bilinearly to ``size`` x ``size``, intensities in [0, 1]; splits train / val / test; objective PSNR on val.

Metrics (means over the examples of a split): ``mse`` (per entry), ``psnr`` (dB, peak 1, per example),
``pm_loss`` at the last gamma, and ``prox_mae`` / ``prox_mse`` against the source's exact prox where one
is known.
"""
from __future__ import annotations

import math
import pathlib
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data.signals import LaplaceSignals
from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import Objective, Shard, Task, eval_shape_or_error

__all__ = ["ProxDenoising"]

LOSSES = ("l2", "l1", "proximal_matching")


class ProxDenoising(Task):
    """Train a denoiser (a learned proximal network) on ``y = x + sigma * noise`` -> ``x``.

    Args:
      source: the clean signals (``experiments.data.signals.LaplaceSignals`` or
        ``experiments.data.images.DigitImages``).
      sigma: the noise level (1-D toy: 1; digits: 0.1, the reference's MNIST level).
      loss: "proximal_matching" (after ``pretrain_steps`` of l1), "l1" or "l2".
      pretrain_steps: l1 steps before proximal matching (reference: half of the run).
      gammas: the proximal-matching gamma of each stage, decreasing; null: the reference ladder
        ``0.08 sqrt(n) * (8, 4, 2, 1)`` (n entries per example).
      stage_steps: steps per gamma stage (the last stage holds to the end of the run).
      steps_per_epoch: a nominal epoch (the data is drawn afresh; epochs only pace the schedule).
    """

    def __init__(self, source: Any, sigma: float = 1.0, loss: str = "proximal_matching",
                 pretrain_steps: int = 1000, gammas: Optional[Sequence[float]] = None, stage_steps: int = 1000,
                 steps_per_epoch: int = 1000):
        if loss not in LOSSES:
            raise UserInputError(f"data.loss={loss!r} is unknown; choose one of {', '.join(LOSSES)}")
        if not sigma > 0:
            raise UserInputError(f"data.sigma must be > 0 (the noise level), got {sigma}")
        if pretrain_steps < 0 or stage_steps < 1 or steps_per_epoch < 1:
            raise UserInputError(f"data.pretrain_steps must be >= 0 and data.stage_steps, data.steps_per_epoch "
                                 f">= 1, got {pretrain_steps}, {stage_steps}, {steps_per_epoch}")
        n = int(np.prod(source.shape))
        if gammas is None:
            gammas = [0.08 * math.sqrt(n) * f for f in (8.0, 4.0, 2.0, 1.0)]
        gammas = [float(g) for g in gammas]
        if not gammas or min(gammas) <= 0:
            raise UserInputError(f"data.gammas must be a non-empty list of positive widths, got {gammas}")
        self.source, self.sigma, self.loss_name = source, float(sigma), loss
        self.pretrain_steps = pretrain_steps if loss == "proximal_matching" else 0
        self.gammas, self.stage_steps, self._steps_per_epoch = gammas, stage_steps, steps_per_epoch
        self.objective = Objective(*source.objective)
        self.volatile_keys = tuple(f"source.{k}" for k in getattr(source, "volatile_keys", ()))
        self._evals: dict[str, dict[str, np.ndarray]] | None = None
        self._seed = 0

    # -- schedule of the loss ---------------------------------------------------------------------
    def phase(self, step: int) -> tuple[bool, float]:
        """(proximal matching?, gamma) at global training step ``step``."""
        if self.loss_name != "proximal_matching" or step < self.pretrain_steps:
            return False, self.gammas[-1]
        stage = min((step - self.pretrain_steps) // self.stage_steps, len(self.gammas) - 1)
        return True, self.gammas[stage]

    # -- data ---------------------------------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        sig = jax.ShapeDtypeStruct((batch_size, *self.source.shape), jnp.float32)
        row = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
        return {"x": sig, "y": sig, "gamma": row, "pm": row}

    def check_model(self, model, batch_size: int) -> None:
        example = self.example_batch(batch_size)
        out = eval_shape_or_error(model, example["y"])
        if out.shape != example["y"].shape:
            raise UserInputError(f"the denoiser must map a batch of shape {example['y'].shape} to the same "
                                 f"shape, got {out.shape}; check the model's dim / image_size / in_channels")

    def setup(self, progress: bool = True) -> None:
        self.source.load(progress=progress)
        self._evals = self.source.eval_sets(self.sigma, seed=12345)     # fixed, whatever the run's seed

    @property
    def evals(self) -> dict[str, dict[str, np.ndarray]]:
        if self._evals is None:
            raise RuntimeError("ProxDenoising.setup() must run before the data is used")
        return self._evals

    def eval_splits(self) -> list[str]:
        return list(self.source.eval_names)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self._steps_per_epoch

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                      shard: Shard = Shard()) -> Iterator[dict[str, np.ndarray]]:
        for i in range(start, self._steps_per_epoch):
            rng = np.random.default_rng([seed, epoch, i])                # a function of (seed, step) only
            x = self.source.sample_train(rng, batch_size)
            y = (x + self.sigma * rng.standard_normal(x.shape)).astype(np.float32)
            pm, gamma = self.phase(epoch * self._steps_per_epoch + i)
            rows = shard.rows(batch_size)
            ones = np.ones(batch_size, np.float32)[rows]
            yield {"x": x[rows], "y": y[rows], "gamma": gamma * ones, "pm": float(pm) * ones}

    def eval_batches(self, split: str, batch_size: int, *,
                     shard: Shard = Shard()) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        for batch, valid in super().eval_batches(split, batch_size, shard=shard):
            rows = len(valid)
            yield {**batch, "gamma": np.full(rows, self.gammas[-1], np.float32),
                   "pm": np.ones(rows, np.float32)}, valid

    # -- loss and metrics (traced) ----------------------------------------------------------------------
    @staticmethod
    def _flat(a: jax.Array) -> jax.Array:
        return a.reshape(a.shape[0], -1)                                 # (B, n)

    def per_example_losses(self, model, batch) -> dict[str, jax.Array]:
        err = self._flat(model(batch["y"]) - batch["x"])                  # (B, n)
        sq = jnp.sum(err * err, -1)
        return {"l2": jnp.mean(err * err, -1), "l1": jnp.mean(jnp.abs(err), -1),
                "pm": 1.0 - jnp.exp(-sq / batch["gamma"] ** 2), "sq": sq}

    def loss(self, model, batch) -> jax.Array:
        losses = self.per_example_losses(model, batch)
        if self.loss_name == "l2":
            return jnp.mean(losses["l2"])
        return jnp.mean(jnp.where(batch["pm"] > 0, losses["pm"], losses["l1"]))

    def metrics(self, model, batch, split: str) -> dict[str, Mean]:
        pred = self._flat(model(batch["y"]))
        err = pred - self._flat(batch["x"])
        n = err.shape[-1]
        sq = jnp.sum(err * err, -1)
        out = {"mse": Mean(sq, n), "psnr": Mean(-10.0 * jnp.log10(jnp.maximum(sq / n, 1e-12))),
               "pm_loss": Mean(1.0 - jnp.exp(-sq / batch["gamma"] ** 2))}
        if "prox" in batch:
            d = pred - self._flat(batch["prox"])
            out["prox_mae"] = Mean(jnp.sum(jnp.abs(d), -1), n)
            out["prox_mse"] = Mean(jnp.sum(d * d, -1), n)
        return out

    # -- after training --------------------------------------------------------------------------------
    def plot(self, model, split: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self.evals[split]
        path = out_dir / f"sample_{split}.png"
        if isinstance(self.source, LaplaceSignals):
            if split != "grid":
                return []
            y = data["y"]
            f = np.asarray(model(jnp.asarray(y)))
            fig, ax = plt.subplots(figsize=(5, 4))
            ax.plot(y[:, 0], data["prox"][:, 0], "k--", label=f"soft threshold at {self.sigma ** 2 / self.source.scale:g}")
            ax.plot(y[:, 0], f[:, 0], label=f"learned ({self.loss_name})")
            ax.set_xlabel("y")
            ax.set_ylabel("f(y)")
            ax.legend()
        else:
            k = min(6, len(data["x"]))
            f = np.asarray(model(jnp.asarray(data["y"][:k])))
            fig, axes = plt.subplots(3, k, figsize=(1.6 * k, 5))
            for j in range(k):
                for r, (img, name) in enumerate(((data["x"][j], "clean"), (data["y"][j], "noisy"),
                                                 (f[j], "denoised"))):
                    axes[r, j].imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
                    axes[r, j].set_xticks([])
                    axes[r, j].set_yticks([])
                    if j == 0:
                        axes[r, j].set_ylabel(name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return [path]
