"""Neural operators: Fourier neural operator (Li et al., ICLR 2021) and relative-error losses.

``operators.pde`` (data generators, needs scipy) is deliberately not imported here.
"""

from operators.fno import FNO
from operators.lsm import LSM
from operators.mgno import MgNO
from operators.tfno import TFNO
from operators.unet import UNet
from operators.losses import relative_h1, relative_hs, relative_lp
from operators.spectral import SpectralConv, spectral_conv

__all__ = ["FNO", "LSM", "MgNO", "TFNO", "UNet", "SpectralConv", "spectral_conv", "relative_h1", "relative_hs", "relative_lp"]
