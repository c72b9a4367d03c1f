"""What a person sees: terminal output, prompts, and renderings of domain objects.

:mod:`.preview` draws the status tree, :mod:`.progress` the progress bar.
``preview()`` and the execution summary print here (a d6tflow habit users rely on);
everything else returns objects and logs through the ``pipeflow`` logger. The domain
modules (plan, events) know nothing of how they are shown.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
import sys
from collections.abc import Iterator, Sequence

from pipeflow.errors import ConfirmationError, listing


def emit(text: str) -> None:
    """Write user-facing text (a preview, a summary) to standard output."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def watched() -> bool:
    """Whether a person is watching (a progress bar helps): a terminal on stderr, a notebook."""
    if in_notebook():
        return True
    return sys.stderr is not None and sys.stderr.isatty()


def in_ipython() -> bool:
    """Whether this runs in IPython (a notebook's kernel, or IPython in a terminal)."""
    get = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return callable(get) and get() is not None


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (output goes to a notebook's cells)."""
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None) if "ipykernel" in sys.modules else None
    shell = get() if callable(get) else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _interactive() -> bool:
    """Whether someone can answer a prompt: a terminal, a notebook, or piped answers."""
    if sys.stdin is not None and sys.stdin.isatty():
        return True
    # Jupyter: stdin is not a terminal, but the kernel answers input() from the notebook.
    if in_notebook():
        return True
    # Answers piped in or read from a file (`yes | python flow.py`), as d6tflow reads them;
    # not /dev/null, a closed stdin or a socket, where nobody answers.
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if sys.stdin is not None else 0
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


#: how the entry point in use skips a confirmation (the ``pipeflow`` command: ``--yes``)
_SKIP_HINT: contextvars.ContextVar[str | None] = contextvars.ContextVar("skip_hint",
                                                                        default=None)


@contextlib.contextmanager
def skip_hint(how_to_skip: str) -> Iterator[None]:
    """Within the block, prompts tell the user to pass ``how_to_skip`` (a CLI flag)."""
    token = _SKIP_HINT.set(how_to_skip)
    try:
        yield
    finally:
        _SKIP_HINT.reset(token)


def confirm(question: str, items: Sequence[str], how_to_skip: str) -> bool:
    """Ask the user to confirm a destructive operation on ``items``.

    Args:
        question: what will happen, e.g. ``"Delete the outputs of 3 tasks?"``.
        items: what it applies to, listed before the question.
        how_to_skip: the argument that skips the prompt, e.g. ``"confirm=False"`` (inside
            :func:`skip_hint`, the hint given there instead).

    Returns:
        True when the user answered yes.

    Raises:
        ConfirmationError: nobody can answer (standard input is neither a terminal, a
            notebook, nor piped answers), or the piped answers ran out.
    """
    how_to_skip = _SKIP_HINT.get() or how_to_skip
    if not _interactive():
        raise ConfirmationError(
            f"{question} This needs confirmation, but standard input is not a terminal, a "
            f"notebook or piped answers, so nobody can answer the prompt. Pass {how_to_skip} "
            f"to proceed without asking."
            f"{listing(items, 20)}"
        )
    emit("\n".join(items))
    try:
        answer = input(f"{question} (y/n) ")
    except EOFError:
        raise ConfirmationError(
            f"{question} This needs confirmation, but standard input ended before an answer "
            f"was given. Pass {how_to_skip} to proceed without asking."
        ) from None
    return answer.strip().lower() in ("y", "yes")
