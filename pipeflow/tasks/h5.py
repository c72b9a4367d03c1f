"""Tasks storing a DataFrame as HDF5 (needs the ``h5`` extra: PyTables).

d6tflow code imports it as ``d6tflow.tasks.h5``; with ``import pipeflow as d6tflow`` the same
import works.
"""

from __future__ import annotations

from pipeflow.targets.h5 import H5PandasTarget
from pipeflow.tasks import TaskData


class TaskH5Pandas(TaskData):
    """A DataFrame stored as HDF5, under the key ``'data'``.

    Example:
        >>> class Prices(TaskH5Pandas):
        ...     def run(self):
        ...         self.save(pd.DataFrame({"close": [1.0, 1.1]}))  # doctest: +SKIP
    """

    target_class = H5PandasTarget
    target_ext = "hdf5"


__all__ = ["TaskH5Pandas"]
