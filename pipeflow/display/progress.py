"""The progress bar of a run: an event sink (tqdm; a widget in notebooks with ipywidgets)."""

from __future__ import annotations

import importlib.util
from typing import Any

from pipeflow.events import Event, EventKind
from pipeflow.graph import describe


class ProgressBar:
    """An event sink drawing a progress bar (tqdm; a widget in notebooks with ipywidgets).

    Example:
        >>> pipeflow.run(Train(), progress=True)  # doctest: +SKIP
    """

    _DONE = (EventKind.TASK_COMPLETED, EventKind.TASK_FAILED, EventKind.TASK_SKIPPED,
             EventKind.TASK_CANCELLED)

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, event: Event) -> None:
        """Advance the bar."""
        if event.kind is EventKind.RUN_STARTED:
            self.bar = bar_class()(total=event.total, unit="task", desc="pipeflow", leave=True)
        elif self.bar is None:
            return
        elif event.kind is EventKind.TASK_ADDED and event.total is not None:
            self.bar.total = event.total
            self.bar.refresh()
        elif event.kind is EventKind.TASK_STARTED:
            self.bar.set_postfix_str(describe(event.task) if event.task else "", refresh=True)
        elif event.kind in self._DONE or (
                event.kind is EventKind.TASK_UP_TO_DATE and event.reason is not None):
            self.bar.update(1)  # (up to date with a reason: done by another process)
        elif event.kind is EventKind.RUN_FINISHED:
            self.bar.set_postfix_str("", refresh=False)
            self.bar.close()
            self.bar = None


def bar_class() -> Any:
    """The progress bar class: tqdm's widget in a notebook with ipywidgets, else text.

    ``tqdm.auto`` picks the widget in any notebook and, without ipywidgets, warns
    ("IProgress not found") before falling back to text: a notebook without ipywidgets gets
    the text bar straight away, with no warning.
    """
    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm


__all__ = ["ProgressBar", "bar_class"]
