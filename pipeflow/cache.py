"""The in-memory store behind cache targets and ``cached=True`` loads (``pipeflow.data``).

Keys are output paths (:class:`pathlib.Path`), values the stored objects.
"""

from __future__ import annotations

import pathlib
from typing import Any

data: dict[pathlib.Path, Any] = {}
