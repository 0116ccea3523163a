"""Reading MATLAB ``.mat`` files one variable at a time: v5/v7 through SciPy, v7.3 through h5py.

The published benchmark files of the FNO paper (Li et al., "Fourier Neural Operator for Parametric Partial
Differential Equations", ICLR 2021, arXiv 2010.08895) are MATLAB files of either kind. The authors' reader,
``MatReader`` in ``utilities3.py`` of github.com/zongyi-li/fourier_neural_operator (also
neuraloperator/neuraloperator's history), tries ``scipy.io.loadmat`` and falls back on ``h5py.File``,
where each field is ``np.transpose(x, axes=range(x.ndim - 1, -1, -1))``: MATLAB stores arrays in column-major
order, so HDF5 (row-major) sees every axis reversed. ``MatFile`` does the same, with three differences:

* the kind is detected from the file itself (a v7.3 file is HDF5: the HDF5 signature at byte 0, 512, 1024,
  2048, ... ; MATLAB writes a 512-byte user block, so it sits at 512), not from an exception;
* a v7.3 variable is read only for the rows asked for (a hyperslab along the last HDF5 axis, which is the
  MATLAB array's first), so 100 test samples of a 1024-sample file read 100 samples, not 1024;
* errors are ``UserInputError``s that name the file: a missing variable lists the variables it has, a
  v7.3 file without h5py names ``pip install h5py``, a truncated or corrupt file names its path.

Rows are the MATLAB array's first axis: ``read("u", slice(0, 10))`` equals ``loadmat(path)["u"][:10]``.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from experiments.errors import UserInputError

__all__ = ["HDF5_SIGNATURE", "MatFile", "is_hdf5", "require_h5py"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# MATLAB classes of numeric arrays (v5: scipy.io.whosmat's class; v7.3: the dataset attribute MATLAB_class).
NUMERIC_CLASSES = ("double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                   "logical")


def is_hdf5(path: str | os.PathLike) -> bool:
    """True if the file holds the HDF5 signature where the HDF5 format allows its superblock: byte 0 or a
    power of two from 512 on (the user block's size); a MATLAB v7.3 file has it at 512."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def require_h5py():
    """The h5py module; a UserInputError naming ``pip install h5py`` where it is not installed."""
    try:
        import h5py
    except ImportError:
        raise UserInputError("reading an HDF5 file (MATLAB v7.3, .h5) needs h5py: pip install h5py") from None
    return h5py


class MatFile:
    """One MATLAB file: its variables' names, shapes and classes, and a variable's rows on demand.

    Args:
      path: a ``.mat`` file, v5/v7 (``scipy.io``) or v7.3 (HDF5, needs h5py).

    ``version`` is "7.3" or "5" (v5 and v7 share the layout SciPy reads). Nothing but the header (v7.3:
    the HDF5 metadata; v5: the variable directory, ``scipy.io.whosmat``) is read when it is opened.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise UserInputError(f"MATLAB file {str(self.path)!r} does not exist (or is not a file); check the path")
        self.version = "7.3" if is_hdf5(self.path) else "5"
        self._variables = self._read_directory()

    def _corrupt(self, err: Exception) -> UserInputError:
        return UserInputError(f"MATLAB file {str(self.path)!r} cannot be read (truncated or corrupt?): "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}; copy it again "
                              f"from its source")

    def _read_directory(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """{name: (shape as MATLAB sees it, MATLAB class)} of the file's variables."""
        try:
            if self.version == "7.3":
                with require_h5py().File(self.path, "r") as f:
                    # MATLAB's variables are the root's datasets; "#refs#" / "#subsystem#" are its internals.
                    return {k: (tuple(reversed(v.shape)), _class_name(v.attrs.get("MATLAB_class", b"double")))
                            for k, v in f.items() if not k.startswith("#") and hasattr(v, "shape")}
            import scipy.io

            variables = {name: (tuple(shape), cls) for name, shape, cls in scipy.io.whosmat(self.path)}
            _check_v5_elements(self.path)  # whosmat lists what it read before the end: a cut file lists fewer
            return variables
        except UserInputError:
            raise
        except Exception as err:  # OSError (h5py), ValueError / MatReadError (scipy): not a readable file
            raise self._corrupt(err) from None

    def keys(self) -> list[str]:
        """The file's variables, in the file's order."""
        return list(self._variables)

    def shape(self, key: str) -> tuple[int, ...]:
        """The variable's shape as MATLAB (and ``scipy.io.loadmat``) sees it; a UserInputError listing the
        file's variables if it has no ``key``, or naming the class of a variable that is not a numeric array."""
        if key not in self._variables:
            raise UserInputError(f"MATLAB file {str(self.path)!r} has no variable {key!r}; it has "
                                 f"{self.keys()}. Set the key option to one of them")
        shape, matlab_class = self._variables[key]
        if matlab_class not in NUMERIC_CLASSES:
            raise UserInputError(f"variable {key!r} of {str(self.path)!r} is a MATLAB {matlab_class}, not a "
                                 f"numeric array; choose a variable that holds the fields")
        return shape

    def read(self, key: str, rows: slice = slice(None)) -> np.ndarray:
        """The variable's ``rows`` (a slice of its first axis), in MATLAB's axis order.

        v7.3 reads only those rows from disk; v5 loads the one variable (``variable_names=[key]``) and slices.
        """
        self.shape(key)
        try:
            if self.version == "7.3":
                with require_h5py().File(self.path, "r") as f:
                    data = f[key][(Ellipsis, rows)]  # HDF5 axes reversed: MATLAB's first axis is the last
                data = np.transpose(data, axes=range(data.ndim - 1, -1, -1))
            else:
                import scipy.io

                data = scipy.io.loadmat(self.path, variable_names=[key])[key][rows]
        except Exception as err:
            raise self._corrupt(err) from None
        if np.iscomplexobj(data) or data.dtype.names:  # v7.3 stores a complex array as a (real, imag) compound
            raise UserInputError(f"variable {key!r} of {str(self.path)!r} is complex; the fields must be real")
        return data


def _class_name(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_v5_elements(path: pathlib.Path) -> None:
    """A ValueError if the chain of a v5 file's top-level data elements runs past its end (a truncated file).

    MAT-file v5 layout (MathWorks, "MAT-File Format", v5): a 128-byte header whose bytes 126-127 read "IM"
    in the writer's byte order, then data elements, each an 8-byte tag (uint32 type, uint32 byte count)
    followed by that many bytes (a matrix's count includes its sub-elements' padding; compressed ones are
    one zlib stream), as ``scipy.io.matlab``'s reader steps from one variable to the next.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(128)
        order = "<" if header[126:128] == b"IM" else ">"
        position = 128
        while position < size:
            f.seek(position)
            tag = f.read(8)
            if len(tag) < 8:
                raise ValueError(f"a data element's tag at byte {position} is cut off at {size} bytes")
            _, count = np.frombuffer(tag, dtype=f"{order}u4")
            position += 8 + int(count)
            if position > size:
                raise ValueError(f"a data element ends at byte {position}, past the file's {size} bytes")
