"""The FNO paper's published ``.mat`` files as field datasets, read where they lie (nothing copied or cached).

Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021, arXiv
2010.08895. The layouts and the cuts are those of the authors' scripts in
github.com/zongyi-li/fourier_neural_operator (``fourier_2d.py``, ``fourier_1d.py``, ``fourier_2d_time.py``,
read through ``MatReader`` of ``utilities3.py``; v5 and v7.3 files alike, ``experiments.data.matfile``):

* ``DarcyMat``: ``piececonst_r421_N1024_smooth1.mat`` (train) / ``..._smooth2.mat`` (test), variables
  ``coeff`` and ``sol`` (N, 421, 421); ``fourier_2d.py`` takes the first ntrain of the train file and the
  FIRST ntest of the test file, strided to s = (421 - 1) / r + 1 (``[::r, ::r][:, :s, :s]``);
* ``BurgersMat``: ``burgers_data_R10.mat``, ``a`` (u0) and ``u`` (u(., 1)), (N, 8192); ``fourier_1d.py``
  takes train = the first ntrain rows and test = the LAST ntest (``[-ntest:]``) of the one file, strided
  to s = 8192 / sub (periodic grid);
* ``NavierStokesMat``: ``ns_V1e-3_N5000_T50.mat`` (or ``ns_data_V100_N1000_T50_{1,2}.mat``), ``a`` (N, 64, 64)
  the initial vorticity, ``u`` (N, 64, 64, T) the snapshots at t = 1..T, time last, and ``t`` (not used);
  ``fourier_2d_time.py`` takes the first ntrain of the train file and the LAST ntest of the test file.
  This is the trajectory dataset of ``experiments.tasks.rollout`` (as ``experiments.data.navier_stokes.
  NavierStokesFlow``: ``load`` gives (w0 (n, s, s, 1), w (n, s, s, T))).

With one file for both splits (``test_path`` None or equal to ``train_path``) train is its first ``n_train``
rows and test its last ``n_test``, as ``fourier_1d.py`` cuts Burgers; splits that would share rows are an
error. The variable names are options (``coeff_key`` ...), for files saved under other names.
"""
from __future__ import annotations

from typing import Optional

from experiments.data.arrays import FileFields

__all__ = ["BurgersMat", "DarcyMat", "NavierStokesMat"]


class DarcyMat(FileFields):
    """Darcy flow a -> u from the published ``piececonst_r421_N1024_smooth{1,2}.mat`` (module docstring).

    Any resolution s with (K - 1) / r + 1 = s is reachable (421 gives 211, 141, 106, 85, ...), as
    ``experiments.data.darcy.DarcyFlow``. Arrays (N, K, K) without a channel axis: one channel each.

    Args:
      train_path: the training file (``..._smooth1.mat``).
      test_path: the test file (``..._smooth2.mat``: the first n_test rows); None: the training file's last n_test.
      coeff_key, sol_key: the variables of the coefficient a and the solution u.
    """

    x_layout = y_layout = "none"
    periodic = False
    test_rows = "first"  # fourier_2d.py: x_test = read_field('coeff')[:ntest]

    def __init__(self, train_path: str, test_path: Optional[str] = None, coeff_key: str = "coeff",
                 sol_key: str = "sol"):
        super().__init__(train_path, test_path, coeff_key, sol_key)


class BurgersMat(FileFields):
    """Burgers u0 -> u(., 1) from the published ``burgers_data_R10.mat`` (module docstring).

    A periodic grid of K points (8192), subsampled to any s dividing K (4096, ..., 256), as
    ``experiments.data.burgers.BurgersFlow``. Arrays (N, K): one channel each.

    Args:
      train_path: the file (train = its first n_train rows).
      test_path: a separate test file (its first n_test rows); None: the last n_test rows of train_path.
      a_key, u_key: the variables of the initial condition and of the solution at t = 1.
    """

    x_layout = y_layout = "none"
    periodic = True
    test_rows = "first"  # only for a separate test file; the paper's one file gives the last n_test

    def __init__(self, train_path: str, test_path: Optional[str] = None, a_key: str = "a", u_key: str = "u"):
        super().__init__(train_path, test_path, a_key, u_key)


class NavierStokesMat(FileFields):
    """2-D Navier-Stokes vorticity trajectories from the published ``ns_*.mat`` files (module docstring).

    ``load`` gives (w0 (n, s, s, 1), w (n, s, s, T)): the trajectory dataset of ``experiments.tasks.rollout``
    (``n_snapshots`` = T, read from the file) and a field dataset w0 -> the T snapshots. A periodic grid
    (64 x 64), subsampled to any s dividing it.

    Args:
      train_path: the training file (its first n_train rows).
      test_path: the test file (its LAST n_test rows, as ``fourier_2d_time.py``); None: the last n_test of
        train_path.
      a_key, u_key: the variables of the initial vorticity (N, s, s) and of the snapshots (N, s, s, T).
    """

    x_layout, y_layout = "none", "last"
    periodic = True
    test_rows = "last"  # fourier_2d_time.py: test_a = read_field('u')[-ntest:, ...]

    def __init__(self, train_path: str, test_path: Optional[str] = None, a_key: str = "a", u_key: str = "u"):
        super().__init__(train_path, test_path, a_key, u_key)

    @property
    def n_snapshots(self) -> int:
        """T: the snapshots per trajectory in the file."""
        return self.out_channels
