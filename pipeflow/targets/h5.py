"""HDF5 storage for DataFrames (needs the ``h5`` extra: PyTables).

d6tflow code imports it as ``d6tflow.targets.h5``; with ``import pipeflow as d6tflow`` the
same import works.
"""

from __future__ import annotations

import pathlib
from typing import Any, ClassVar

import pandas as pd

from pipeflow.targets import _PandasFileTarget, require


class H5PandasTarget(_PandasFileTarget):
    """A DataFrame in an HDF5 file, under the key ``'data'`` (as d6tflow stores it).

    Example:
        >>> target = H5PandasTarget("data/Prices/Prices__99914b932b-data.hdf5")  # doctest: +SKIP
    """

    #: the HDF5 key the frame is stored under
    hdf_key: ClassVar[str] = "data"
    fix = ("HDF5's default (fixed) format stores no categorical columns and needs distinct "
           "column names: pass format='table' to save() for categoricals, rename duplicate "
           "columns, or save the frame with TaskPqPandas or TaskPickle.")

    def check_frame(self, df: pd.DataFrame) -> None:
        """No column named None, no nullable integer, float or boolean column (``Int64``...).

        HDF5's fixed format cannot store them: with rows pandas refuses them, without rows
        it writes a file it cannot read back.
        """
        if any(c is None for c in df.columns):
            raise ValueError(
                "a column is named None: HDF5's fixed format then loses its values (they "
                "load as NaN). Rename it (e.g. df.columns = [f'col_{i}' for i in "
                "range(df.shape[1])]), or save the frame with TaskPqPandas or TaskPickle.")
        for name, dtype in df.dtypes.items():
            if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iufb":
                raise ValueError(
                    f"column {name!r} has the nullable dtype {dtype}, which HDF5 does not "
                    f"store. Convert it (df[{name!r}] = df[{name!r}].astype('float64'), or "
                    f"astype(object)), or save the frame with TaskPqPandas or TaskPickle.")

    def read(self, path: pathlib.Path, **kwargs: Any) -> pd.DataFrame:
        """Read the frame stored under :attr:`hdf_key` (``key=`` picks another)."""
        require("tables", "h5", self)
        kwargs.setdefault("key", self.hdf_key)
        return pd.read_hdf(path, **kwargs)

    def write(self, data: pd.DataFrame, path: pathlib.Path, **kwargs: Any) -> None:
        """Write the frame under :attr:`hdf_key` into a new file."""
        require("tables", "h5", self)
        kwargs.setdefault("key", self.hdf_key)
        kwargs.setdefault("mode", "w")
        data.to_hdf(path, **kwargs)


__all__ = ["H5PandasTarget"]
