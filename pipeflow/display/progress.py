"""The progress bar of a run: an event sink that ends saying how the run ended.

In a notebook the bar is a small HTML element, drawn through an IPython display handle
(no ipywidgets needed, updated from any thread, a few times a second); in a terminal it is
tqdm's text bar. Either way it is drawn only once there is something to run, and it ends
green only when every task succeeded: a failed or cancelled run (a Stop button, Ctrl-C)
ends marked so, with the counts (``3 done, 1 failed, 2 skipped, 1 cancelled``).
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from pipeflow.display import in_notebook
from pipeflow.events import Event, EventKind
from pipeflow.graph import describe

#: a run's final states, as the bar shows them
SUCCESS, FAILED, CANCELLED = "done", "FAILED", "CANCELLED"
_COLOUR = {SUCCESS: "#16a34a", FAILED: "#dc2626", CANCELLED: "#d97706", None: "#2563eb"}
_COUNTED = {EventKind.TASK_COMPLETED: "done", EventKind.TASK_FAILED: "failed",
            EventKind.TASK_SKIPPED: "skipped", EventKind.TASK_CANCELLED: "cancelled"}


class ProgressBar:
    """An event sink drawing a run's progress bar (HTML in a notebook, tqdm's text elsewhere).

    Nothing is drawn for a run with nothing to run. The bar fills with the tasks that
    succeeded; at the end it says how the run ended: ``done`` (green), ``FAILED`` (red) or
    ``CANCELLED`` (a cancel, a Stop button, Ctrl-C), with the counts of what happened.

    Args:
        notebook: draw the HTML bar (default: when running in a Jupyter kernel).
        interval: the least seconds between two redraws (the last one is always drawn).

    Example:
        >>> pipeflow.run(Train(), progress=True)  # doctest: +SKIP
    """

    def __init__(self, notebook: bool | None = None, interval: float = 0.25) -> None:
        self.notebook = in_notebook() if notebook is None else notebook
        self.interval = interval
        self.view: _HtmlView | _TextView | None = None
        self.total = 0
        self.counts = dict.fromkeys(("done", "failed", "skipped", "cancelled"), 0)
        self.current = ""
        self.state: str | None = None  # None while the run goes on
        self.note = ""  # text shown under the ended bar (a background run's summary)
        self._last = 0.0
        self._shown: Any = None  # the notebook bar's view, kept once the run ended
        self._lock = threading.Lock()  # events and the delayed redraw come from two threads
        self._later: threading.Timer | None = None  # the redraw of a change not drawn yet

    def __call__(self, event: Event) -> None:
        """Record an event; redraw."""
        kind = event.kind
        if kind is EventKind.RUN_STARTED:
            self.total = event.total or 0
            self._draw()
        elif kind is EventKind.TASK_ADDED and event.total is not None:
            self.total = event.total
            self._draw()
        elif kind is EventKind.TASK_STARTED:
            self.current = describe(event.task) if event.task is not None else ""
            self._draw()
        elif kind in _COUNTED:
            self.counts[_COUNTED[kind]] += 1
            self._draw()
        elif kind is EventKind.TASK_UP_TO_DATE and event.reason is not None:
            self.counts["done"] += 1  # done by another process while this run waited
            self._draw()
        elif kind is EventKind.RUN_FINISHED:
            self.state = self._final(event.error)
            self.current = ""
            self._draw(final=True)
            if self.notebook:
                self._shown = self.view
            self.view = None

    def drawn(self) -> bool:
        """Whether the bar was drawn in a notebook (its display is in the starting cell)."""
        return self.notebook and (self.view or self._shown) is not None

    def add_note(self, text: str) -> bool:
        """Show ``text`` under the ended notebook bar, in the bar's own display.

        A background run's execution summary goes there: into the cell that started the
        run, whichever cell runs when it ends.

        Returns:
            False when there is no notebook bar to show it in (nothing was drawn).
        """
        if self._shown is None:
            return False
        self.note = text
        self._shown.draw(True)
        return True

    def _final(self, error: BaseException | None) -> str:
        c = self.counts
        if c["failed"]:
            return FAILED
        if c["cancelled"] or isinstance(error, KeyboardInterrupt):
            return CANCELLED
        if error is not None or c["skipped"] or c["done"] < self.total:
            return FAILED
        return SUCCESS

    def counts_text(self) -> str:
        """``3 done, 1 failed, 2 skipped, 1 cancelled`` (what did not happen is left out)."""
        shown = [f"{n} {name}" for name, n in self.counts.items() if n or name == "done"]
        return ", ".join(shown)

    def text(self) -> str:
        """The bar's line as plain text."""
        c = self.counts
        head = f"pipeflow: {self.state}" if self.state else "pipeflow:"
        line = f"{head} {c['done']}/{self.total} tasks"
        if self.state is not None:
            return f"{line} ({self.counts_text()})"
        extra = [f"{n} {name}" for name, n in c.items() if n and name != "done"]
        running = f", running {self.current}" if self.current else ""
        return line + (f" ({', '.join(extra)})" if extra else "") + running

    def html(self) -> str:
        """The bar as a small HTML element (its state in ``data-state``)."""
        colour = _COLOUR[self.state]
        width = 100 * self.counts["done"] / self.total if self.total else 0
        state = {SUCCESS: "success", FAILED: "failed", CANCELLED: "cancelled"}.get(
            self.state or "", "running")
        return (
            f'<div class="pipeflow-progress" data-state="{state}" '
            f'style="font-family:monospace;font-size:12px;line-height:1.6">'
            f'<span style="display:inline-block;width:220px;height:10px;background:#e5e7eb;'
            f'border-radius:3px;vertical-align:middle;overflow:hidden;margin-right:8px">'
            f'<span style="display:block;width:{width:.1f}%;height:100%;background:{colour}">'
            f'</span></span><span style="color:{colour if self.state else "inherit"}">'
            f'{html.escape(self.text())}</span></div>')

    def _draw(self, final: bool = False) -> None:
        if self.view is None:
            if self.total <= 0:
                return  # nothing to run: nothing drawn
            self.view = _HtmlView(self) if self.notebook else _TextView(self)
            self._last = time.monotonic()
            return
        with self._lock:
            now = time.monotonic()
            if final or now - self._last >= self.interval:
                if self._later is not None:
                    self._later.cancel()
                    self._later = None
                self._last = now
                self.view.draw(final)
            elif self._later is None:  # drawn a moment ago: draw this change a bit later,
                # else the bar shows the previous state (the task that just ended) until
                # the next event, which may be minutes away
                self._later = threading.Timer(self._last + self.interval - now, self._flush)
                self._later.daemon = True
                self._later.start()

    def _flush(self) -> None:
        """The delayed redraw: the changes since the last drawing (unless the run ended)."""
        with self._lock:
            self._later = None
            if self.view is None or self.state is not None:
                return
            self._last = time.monotonic()
            self.view.draw(False)


class _HtmlView:
    """The bar in a notebook: one display element, updated in place through its handle."""

    def __init__(self, bar: ProgressBar):
        from IPython.display import display

        self.bar = bar
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, str]:
        note = self.bar.note
        if not note:
            return {"text/plain": self.bar.text(), "text/html": self.bar.html()}
        return {"text/plain": f"{self.bar.text()}\n{note}",
                "text/html": f"{self.bar.html()}{note_html(note)}"}

    def draw(self, final: bool) -> None:
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)


class _TextView:
    """The bar in a terminal (or wherever ``progress=True`` sends it): tqdm's text bar."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar
        self.tqdm = bar_class()(total=bar.total, unit="task", desc="pipeflow", leave=True)

    def draw(self, final: bool) -> None:
        b, t = self.bar, self.tqdm
        if t.total != b.total:
            t.total = b.total
        t.n = b.counts["done"]
        if not final:
            extra = [f"{n} {name}" for name, n in b.counts.items() if n and name != "done"]
            t.set_postfix_str(", ".join([*extra, *([b.current] if b.current else [])]),
                              refresh=False)
            t.refresh()
            return
        if b.state is not SUCCESS:
            t.colour = "red" if b.state is FAILED else "yellow"
        t.set_description_str(f"pipeflow {b.state}", refresh=False)
        t.set_postfix_str(b.counts_text(), refresh=False)
        t.refresh()
        t.close()


class StartingCell:
    """Where a background run started in a notebook shows its execution summary.

    The summary goes under the run's progress bar (its display, in the cell that started
    the run); without a bar, into a display made in that cell when the run started. Never
    printed by the run's thread, which would put it in whatever cell runs when it ends.

    Args:
        bar: the run's progress bar (None: none).
    """

    def __init__(self, bar: ProgressBar | None) -> None:
        import threading

        self.bar = bar
        self._lock = threading.Lock()
        self._text: str | None = None
        self._noted = False
        self._claimed = False
        self._handle: Any = None

    def claim(self) -> None:
        """Called in the starting cell once the run has started: keep a place for the summary."""
        from IPython.display import display

        with self._lock:
            self._claimed = True
            if self._noted:
                return
            if self._text is not None:  # ended already, with no bar to show it under
                display(_note_bundle(self._text), raw=True)
            elif self.bar is None or not self.bar.drawn():
                self._handle = display(_note_bundle("pipeflow: running in the background"),
                                       raw=True, display_id=True)

    def finish(self, text: str) -> None:
        """Called by the run's thread when the run ended: show ``text`` in the starting cell."""
        with self._lock:
            self._text = text
            if self.bar is not None and self.bar.add_note(text):
                self._noted = True
            elif self._handle is not None:
                self._handle.update(_note_bundle(text), raw=True)
                self._noted = True
            elif self._claimed:  # no place was kept (cannot happen in a notebook): print
                from pipeflow.display import emit

                emit(text)
                self._noted = True


def _note_bundle(text: str) -> dict[str, str]:
    return {"text/plain": text, "text/html": note_html(text)}


def note_html(text: str) -> str:
    """Text (an execution summary) as a notebook shows it under a bar: preformatted."""
    return (f'<pre class="pipeflow-summary" style="font-size:12px;margin:4px 0">'
            f'{html.escape(text)}</pre>')


def bar_class() -> Any:
    """The text bar's class: tqdm's (a notebook gets :class:`ProgressBar`'s HTML bar).

    Never ``tqdm.auto``: without ipywidgets it warns ("IProgress not found"), and its
    widget, created from a background run's thread, lands in whatever cell runs then.
    """
    from tqdm.std import tqdm

    return tqdm


__all__ = ["CANCELLED", "FAILED", "SUCCESS", "ProgressBar", "StartingCell", "bar_class",
           "note_html"]
