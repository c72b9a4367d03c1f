"""The table :func:`pipeflow.history` and :func:`pipeflow.runs` return: a DataFrame that reads well.

:class:`HistoryFrame` is a ``pandas.DataFrame`` in every way (filter it, sort it, group
it, save it): its numbers stay numbers (``duration`` and ``cpu_time`` in seconds,
``peak_memory`` in bytes) and only its display differs. Printed, or shown in a notebook,
durations read ``2 min 05 s``, sizes ``312 MiB``, times ``2026-11-21 20:14:03`` (local
time) and empty cells are empty, not ``NaN``/``NaT``/``None``. Frames derived from it
(sorted, filtered, a few columns) display the same way; ``to_string()``, ``to_html()``,
``to_csv()`` and ``describe()`` give the plain values.

Imported when the history is queried: it needs pandas, which ``import pipeflow`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pipeflow.display.history import duration_text, missing, size_text

#: columns shown as durations (their values are seconds) and as sizes (bytes)
DURATIONS = frozenset({"duration", "cpu_time"})
SIZES = frozenset({"peak_memory"})


def _plain(value: Any) -> str:
    return "" if missing(value) else str(value)


def _clock(moment: Any) -> str:
    """A time to the second, in its column's zone (local time, in the history's tables)."""
    return "" if missing(moment) else (
        moment.strftime("%Y-%m-%d %H:%M:%S") if hasattr(moment, "strftime") else str(moment))


class HistoryFrame(pd.DataFrame):
    """A DataFrame of the run history, displayed in human units (see the module docstring)."""

    @property
    def _constructor(self) -> Callable[..., HistoryFrame]:
        return HistoryFrame

    def _formatters(self) -> list[Callable[[Any], str] | None]:
        """How each column (by position) is shown; None: as pandas shows it."""
        out: list[Callable[[Any], str] | None] = []
        for name, dtype in zip(self.columns, self.dtypes):
            if name in DURATIONS:
                out.append(duration_text)
            elif name in SIZES:
                out.append(size_text)
            elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
                    dtype):
                out.append(_clock)
            elif pd.api.types.is_float_dtype(dtype):
                out.append(None)  # a column of the user's: pandas' own float format
            else:
                out.append(_plain)  # None, NA of Int64 and str columns: empty
        return out

    def _shown(self) -> pd.DataFrame:
        """A plain DataFrame of the text each cell shows (the same shape, index, columns).

        pandas shows None as ``None`` and NA as ``<NA>`` whatever the formatters say, so
        the cells are made text first. Only the rows a display can show (the first and
        last ``display.max_rows``) are formatted: a long history displays as fast as a
        short one.
        """
        n = len(self)
        rows = pd.get_option("display.max_rows")
        positions = list(range(n))
        if rows and n > 2 * rows:
            positions = [*range(rows), *range(n - rows, n)]
        columns = {}
        for j, shown in enumerate(self._formatters()):
            column = self.iloc[:, j]
            if shown is None:
                columns[j] = column.to_numpy()
                continue
            cells = np.full(n, "", dtype=object)
            values = column.iloc[positions].tolist() if len(positions) < n else column.tolist()
            cells[positions] = [shown(v) for v in values]
            columns[j] = cells
        out = pd.DataFrame(columns, index=self.index)
        out.columns = self.columns
        return out

    def __repr__(self) -> str:
        """The table as text, in human units (as ``print`` and a terminal show it)."""
        return pd.DataFrame.__repr__(self._shown())

    def _repr_html_(self) -> str | None:
        """The table as HTML for a notebook, in human units, empty cells empty.

        A cell is cut at 200 characters, not pandas' 50: the task column's parameters
        (``Train(test_size=0.25, seed=42, model='ridge')``) tell the rows apart.
        """
        with pd.option_context("display.max_colwidth", 200):
            return pd.DataFrame._repr_html_(self._shown())

    def describe(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """``DataFrame.describe``, as a plain DataFrame (counts are not durations)."""
        return pd.DataFrame(pd.DataFrame(self).describe(*args, **kwargs))


__all__ = ["DURATIONS", "SIZES", "HistoryFrame"]
