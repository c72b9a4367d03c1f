"""A picture of a flow: its tasks coloured by status, as SVG, PNG, Graphviz or Mermaid.

:func:`build_dag` turns a plan (and which tasks failed last time) into a :class:`Dag`:
boxes (one per task, or one per family with many instances at the same depth: "Train ×
120" with per-status counts) and deduplicated edges. The layout is computed here, in
Python, so no system package (Graphviz) is needed: a layered (Sugiyama-style) drawing with
longest-path layering, dummy nodes on long edges, barycentre ordering against crossings
and a balanced horizontal placement. Upstream tasks are drawn above the tasks that need
them; arrows point downstream.

PNG output draws the same layout with matplotlib (imported only then).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import luigi

from pipeflow.contract import describe
from pipeflow.errors import MissingDependencyError, OutputError, ParameterError
from pipeflow.parameters import redact
from pipeflow.plan import Plan, Status

#: a family with more instances than this at the same depth is drawn as one box
GROUP_ABOVE = 6
#: the formats :meth:`Dag.save` writes, by file extension
FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mmd"}

#: status -> (fill, stroke); worst first
STATUSES = ("failed", "stale", "pending", "complete")
COLORS = {
    "complete": ("#c8e6c9", "#2e7d32"),
    "pending": ("#bbdefb", "#1565c0"),
    "stale": ("#ffe082", "#b26a00"),
    "failed": ("#ffcdd2", "#c62828"),
}
LEGEND = {"complete": "complete", "pending": "pending", "stale": "stale",
          "failed": "failed last time"}

_MAX_VALUE = 24     # characters of a parameter value shown in a box
_MAX_PARAMS = 3     # parameters shown in a box
_MAX_LINE = 44      # characters of a box's line
_FONT = 12          # px
_PAD_X, _GAP_X, _GAP_Y, _MARGIN, _LEGEND_H = 10, 18, 42, 16, 30
_BAR_H = 6
_DUMMY_W = 8
# characters XML 1.0 cannot hold, even escaped (and lone surrogates, which UTF-8 cannot)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """``text`` with control characters and lone surrogates replaced (one line, encodable)."""
    return _UNPRINTABLE.sub(lambda m: " " if m.group() in "\n\r\t" else "\ufffd", text)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def text_width(text: str, bold: bool = False) -> float:
    """Estimated width in px of ``text`` at the drawing's font size (no font metrics here)."""
    width = 0.0
    for ch in text:
        if unicodedata.east_asian_width(ch) in "WF":
            width += _FONT
        elif unicodedata.combining(ch):
            continue
        else:
            width += _FONT * (0.62 if bold else 0.58)
    return width


@dataclass(frozen=True)
class DagNode:
    """One box: a task, or a group of instances of one family.

    Attributes:
        key: its id in the drawing (``n0``, ``n1``...).
        family: the task family.
        lines: the text lines of the box (family first).
        status: the task's status (a group: its worst one): complete, pending, stale or
            failed (its last recorded run failed).
        counts: tasks per status (one task: ``{status: 1}``).
        title: what hovering shows: the task with its parameters, its status and why.
        layer: its depth (0: tasks requiring nothing).
        task_ids: the tasks drawn in the box.
    """

    key: str
    family: str
    lines: tuple[str, ...]
    status: str
    counts: dict[str, int]
    title: str
    layer: int
    task_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        """How many tasks the box stands for."""
        return len(self.task_ids)

    @property
    def grouped(self) -> bool:
        """Whether the box stands for several tasks."""
        return self.size > 1


@dataclass(frozen=True)
class DagEdge:
    """An arrow from an upstream box to the box that requires it."""

    src: int
    dst: int
    optional: bool


@dataclass
class _Layout:
    width: float
    height: float
    boxes: list[tuple[float, float, float, float]]   # x, y (top left), w, h per node
    paths: list[list[tuple[float, float]]]           # points per edge, upstream first


class Dag:
    """A picture of a flow: shown inline in Jupyter, saved as SVG, PNG, DOT or Mermaid.

    Attributes:
        nodes: the boxes, upstream before downstream.
        edges: the arrows (one per pair of boxes; dashed when only optional).
        counts: tasks per status, over the whole flow.

    Example:
        >>> flow.dag()                       # doctest: +SKIP
        >>> flow.dag().save("flow.svg")      # doctest: +SKIP
        >>> print(flow.dag().to_mermaid())   # doctest: +SKIP
    """

    def __init__(self, nodes: list[DagNode], edges: list[DagEdge]) -> None:
        self.nodes = nodes
        self.edges = edges
        counts: dict[str, int] = {}
        for node in nodes:
            for status, n in node.counts.items():
                counts[status] = counts.get(status, 0) + n
        self.counts = {s: counts[s] for s in reversed(STATUSES) if counts.get(s)}

    @property
    def n_tasks(self) -> int:
        """How many tasks the picture shows."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: tasks per status, boxes and arrows."""
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items()) or "no task"
        grouped = len(self.nodes) != self.n_tasks
        boxes = f", in {len(self.nodes)} boxes" if grouped else ""
        return (f"{_plural(self.n_tasks, 'task')} ({counts}){boxes}, "
                f"{_plural(len(self.edges), 'edge')}")

    def __repr__(self) -> str:
        return (f"<Dag {self.summary()}: .save('flow.svg' | .png | .dot | .mmd), "
                f".to_svg(), .to_dot(), .to_mermaid()>")

    __str__ = __repr__

    def _repr_html_(self) -> str:
        # One representation only (a notebook shows it once, stores the SVG once); inline
        # SVG, so hovering a box shows its title.
        return f'<div style="max-width:100%;overflow:auto">{self.to_svg()}</div>'

    # -- layout --------------------------------------------------------------------------------
    def _box_size(self, node: DagNode) -> tuple[float, float]:
        widths = [text_width(line, bold=i == 0) for i, line in enumerate(node.lines)]
        w = max(widths) + 2 * _PAD_X
        h = 10 + len(node.lines) * (_FONT + 4) + (_BAR_H + 4 if node.grouped else 0)
        return max(w, 60.0), float(h)

    @cached_property
    def _layout(self) -> _Layout:
        sizes = [self._box_size(n) for n in self.nodes]
        return layered_layout([n.layer for n in self.nodes], sizes,
                              [(e.src, e.dst) for e in self.edges])

    # -- renderings ----------------------------------------------------------------------------
    def to_svg(self) -> str:
        """The picture as SVG text (standalone; hover a box for its details)."""
        lay = self._layout
        width = max(lay.width, _legend_width() + 2 * _MARGIN)
        height = lay.height + _LEGEND_H
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="Helvetica, Arial, sans-serif" font-size="{_FONT}">',
            "<title>pipeflow: " + _xml(self.summary()) + "</title>",
            '<defs><marker id="pf-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
            'fill="#555"/></marker></defs>',
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        ]
        out.append(self._svg_legend())
        out.append(f'<g class="edges" transform="translate(0,{_LEGEND_H})">')
        for edge, pts in zip(self.edges, lay.paths):
            dash = ' stroke-dasharray="5,4"' if edge.optional else ""
            kind = "optional" if edge.optional else "required"
            src, dst = self.nodes[edge.src], self.nodes[edge.dst]
            out.append(
                f'<path class="edge {kind}" data-from="{src.key}" data-to="{dst.key}" '
                f'd="{_svg_path(pts)}" fill="none" stroke="#555" stroke-width="1.3"{dash} '
                f'marker-end="url(#pf-arrow)"><title>{_xml(src.lines[0])} → '
                f'{_xml(dst.lines[0])}{" (optional)" if edge.optional else ""}</title></path>')
        out.append("</g>")
        out.append(f'<g class="nodes" transform="translate(0,{_LEGEND_H})">')
        for node, (x, y, w, h) in zip(self.nodes, lay.boxes):
            fill, stroke = COLORS[node.status]
            out.append(
                f'<g class="node {node.status}" id="{node.key}" '
                f'data-family="{_xml(node.family)}" data-status="{node.status}" '
                f'data-tasks="{node.size}"><title>{_xml(node.title)}</title>'
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6" '
                f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>')
            for i, line in enumerate(node.lines):
                weight = ' font-weight="bold"' if i == 0 else ""
                out.append(f'<text x="{x + w / 2:.1f}" y="{y + 18 + i * (_FONT + 4):.1f}" '
                           f'text-anchor="middle"{weight}>{_xml(line)}</text>')
            if node.grouped:
                out.append(self._svg_bar(node, x + _PAD_X, y + h - _BAR_H - 6, w - 2 * _PAD_X))
            out.append("</g>")
        out.append("</g></svg>")
        return "\n".join(out)

    @staticmethod
    def _svg_bar(node: DagNode, x: float, y: float, w: float) -> str:
        parts = ['<g class="bar">']
        for status, n, x0, dx in _bar_segments(node, x, w):
            parts.append(f'<rect class="{status}" x="{x0:.1f}" y="{y:.1f}" width="{dx:.1f}" '
                         f'height="{_BAR_H}" fill="{COLORS[status][1]}">'
                         f'<title>{n} {LEGEND[status]}</title></rect>')
        parts.append("</g>")
        return "".join(parts)

    @staticmethod
    def _svg_legend() -> str:
        parts = ['<g class="legend">']
        x = float(_MARGIN)
        for status in reversed(STATUSES):
            fill, stroke = COLORS[status]
            parts.append(f'<rect x="{x:.0f}" y="9" width="14" height="12" rx="3" fill="{fill}" '
                         f'stroke="{stroke}"/><text x="{x + 19:.0f}" y="19">'
                         f'{LEGEND[status]}</text>')
            x += 19 + text_width(LEGEND[status]) + 14
        for label, dash in (("requires", ""), ("optional", ' stroke-dasharray="5,4"')):
            parts.append(f'<line x1="{x:.0f}" y1="15" x2="{x + 24:.0f}" y2="15" stroke="#555" '
                         f'stroke-width="1.3"{dash} marker-end="url(#pf-arrow)"/>'
                         f'<text x="{x + 30:.0f}" y="19">{label}</text>')
            x += 30 + text_width(label) + 14
        parts.append("</g>")
        return "".join(parts)

    def to_dot(self) -> str:
        """The graph as Graphviz source (``dot -Tpdf flow.dot -o flow.pdf``)."""
        out = ["digraph pipeflow {",
               '  graph [rankdir=TB, fontname="Helvetica"];',
               '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];']
        for node in self.nodes:
            fill, stroke = COLORS[node.status]
            label = _dot("\n".join(node.lines))
            out.append(f'  {node.key} [label="{label}", '
                       f'fillcolor="{fill}", color="{stroke}", tooltip="{_dot(node.title)}"];')
        for edge in self.edges:
            style = " [style=dashed]" if edge.optional else ""
            out.append(f"  {self.nodes[edge.src].key} -> {self.nodes[edge.dst].key}{style};")
        out.append("}")
        return "\n".join(out) + "\n"

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (GitHub and many wikis draw it)."""
        out = ["flowchart TB"]
        for node in self.nodes:
            label = "<br/>".join(_mermaid(line) for line in node.lines)
            out.append(f'  {node.key}["{label}"]:::{node.status}')
        for edge in self.edges:
            arrow = "-.->" if edge.optional else "-->"
            out.append(f"  {self.nodes[edge.src].key} {arrow} {self.nodes[edge.dst].key}")
        for status in reversed(STATUSES):
            fill, stroke = COLORS[status]
            out.append(f"  classDef {status} fill:{fill},stroke:{stroke},color:#000")
        return "\n".join(out) + "\n"

    def to_png(self) -> bytes:
        """The picture as PNG bytes, drawn with matplotlib (``pip install matplotlib``).

        Raises:
            MissingDependencyError: matplotlib is not installed.
        """
        return _png(self)

    def save(self, path: str | os.PathLike[str], format: str | None = None) -> pathlib.Path:
        """Write the picture to ``path``, in the format its extension names.

        ``.svg``, ``.png``, ``.dot`` (Graphviz source; also ``.gv``) or ``.mmd`` (Mermaid).
        The file is written whole or not at all (a temporary file, then renamed), exactly
        at ``path``; an existing file there is replaced.

        Args:
            path: the file to write.
            format: ``"svg"``, ``"png"``, ``"dot"`` or ``"mmd"`` whatever the extension.

        Returns:
            The path written.

        Raises:
            ParameterError: an extension (or format) that is none of these, or a folder
                that does not exist.
            OutputError: the file cannot be written there (permissions, a full disk...).
            MissingDependencyError: PNG without matplotlib.
        """
        target = pathlib.Path(os.fspath(path))
        if target.is_dir():
            raise ParameterError(f"cannot save the picture to {os.fspath(path)!r}: it is a "
                                 f"folder. Name a file, e.g. {os.fspath(target / 'flow.svg')!r}.")
        kind = _format_of(target, format)
        folder = target.parent
        if not folder.is_dir():
            raise ParameterError(
                f"cannot save the picture to {os.fspath(path)!r}: the folder "
                f"{os.fspath(folder)!r} does not exist. Create it first, or choose another "
                f"path.")
        data = {"svg": lambda: self.to_svg().encode("utf-8"), "png": self.to_png,
                "dot": lambda: self.to_dot().encode("utf-8"),
                "mmd": lambda: self.to_mermaid().encode("utf-8")}[kind]()
        tmp = None
        try:
            # not mkstemp: its 0600 would make the user's picture private; 0666 minus umask,
            # as any program writing a file
            tmp = os.fspath(folder / f".{target.name}.{secrets.token_hex(6)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
            tmp = None
        except OSError as exc:
            raise OutputError(
                f"cannot save the picture to {os.fspath(path)!r}: {exc.strerror or exc}. "
                f"Choose a path in a folder you can write to.") from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return target


def _format_of(path: pathlib.Path, format: str | None) -> str:
    supported = ", ".join(sorted({".svg", ".png", ".dot", ".mmd"}))
    if format is not None:
        kind = str(format).lower().lstrip(".")
        if kind not in FORMATS.values():
            raise ParameterError(f"format={format!r} is not a picture format pipeflow writes; "
                                 f"use one of svg, png, dot, mmd.")
        return kind
    kind_or_none = FORMATS.get(path.suffix.lower())
    if kind_or_none is None:
        raise ParameterError(
            f"cannot save the picture as {os.fspath(path)!r}: the extension "
            f"{path.suffix or '(none)'!r} names no format pipeflow writes. Use one of "
            f"{supported} (Graphviz source, Mermaid).")
    return kind_or_none


def _xml(text: str) -> str:
    return (clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _dot(text: str) -> str:
    lines = [clean(line).replace("\\", "\\\\").replace('"', '\\"') for line in text.split("\n")]
    return "\\n".join(lines)


_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 _.,:=+\-/()×·]")


def _mermaid(text: str) -> str:
    return "".join(ch if _MERMAID_SAFE.fullmatch(ch) else f"#{ord(ch)};" for ch in clean(text))


def _svg_path(pts: Sequence[tuple[float, float]]) -> str:
    (x0, y0), rest = pts[0], pts[1:]
    d = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        ym = (y0 + y1) / 2
        d.append(f"C{x0:.1f},{ym:.1f} {x1:.1f},{ym:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


def _bar_segments(node: DagNode, x: float, w: float) -> list[tuple[str, int, float, float]]:
    out = []
    total = node.size
    for status in reversed(STATUSES):
        n = node.counts.get(status, 0)
        if n:
            dx = w * n / total
            out.append((status, n, x, dx))
            x += dx
    return out


def _legend_width() -> float:
    return (sum(19 + text_width(t) + 14 for t in LEGEND.values())
            + sum(30 + text_width(t) + 14 for t in ("requires", "optional")))


# -- layout ------------------------------------------------------------------------------------
def layered_layout(layers: Sequence[int], sizes: Sequence[tuple[float, float]],
                   edges: Sequence[tuple[int, int]], sweeps: int = 4) -> _Layout:
    """Place boxes in rows by layer and route edges through the rows they cross.

    Args:
        layers: each node's row (an edge goes from a lower to a higher row).
        sizes: each node's (width, height).
        edges: (upstream node, downstream node) pairs.
        sweeps: barycentre passes (down then up) against edge crossings.

    Returns:
        Box positions and, per edge, the points of its path (bottom of the upstream box to
        the top of the downstream one).
    """
    n = len(layers)
    rows = max(layers, default=-1) + 1
    # nodes and dummies: position -> layer, width; dummies carry long edges row by row
    layer_of = list(layers)
    width = [w for w, _ in sizes]
    up: list[list[int]] = [[] for _ in range(n)]
    down: list[list[int]] = [[] for _ in range(n)]
    chains: list[list[int]] = []
    for src, dst in edges:
        chain = [src]
        for lay in range(layers[src] + 1, layers[dst]):
            layer_of.append(lay)
            width.append(_DUMMY_W)
            up.append([])
            down.append([])
            chain.append(len(layer_of) - 1)
        chain.append(dst)
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)
        chains.append(chain)
    order: list[list[int]] = [[] for _ in range(rows)]
    for v, lay in enumerate(layer_of):
        order[lay].append(v)
    rank = [0.0] * len(layer_of)
    for row in order:
        for i, v in enumerate(row):
            rank[v] = float(i)

    def reorder(row: list[int], neighbours: list[list[int]]) -> list[int]:
        keys = {}
        for v in row:
            ns = neighbours[v]
            keys[v] = sum(rank[u] for u in ns) / len(ns) if ns else rank[v]
        row.sort(key=keys.__getitem__)
        for i, v in enumerate(row):
            rank[v] = float(i)
        return row

    for _ in range(sweeps):
        for lay in range(1, rows):
            reorder(order[lay], up)
        for lay in range(rows - 2, -1, -1):
            reorder(order[lay], down)

    # x: each node near the mean of its neighbours' x, order kept, no overlap
    x = [0.0] * len(layer_of)
    for row in order:
        at = 0.0
        for v in row:
            x[v] = at + width[v] / 2
            at += width[v] + _GAP_X

    def place(row: list[int], neighbours: list[list[int]]) -> None:
        want = [sum(x[u] for u in neighbours[v]) / len(neighbours[v]) if neighbours[v]
                else x[v] for v in row]
        left = list(want)
        for i in range(1, len(row)):
            gap = (width[row[i - 1]] + width[row[i]]) / 2 + _GAP_X
            left[i] = max(left[i], left[i - 1] + gap)
        right = list(want)
        for i in range(len(row) - 2, -1, -1):
            gap = (width[row[i + 1]] + width[row[i]]) / 2 + _GAP_X
            right[i] = min(right[i], right[i + 1] - gap)
        for v, a, b in zip(row, left, right):
            x[v] = (a + b) / 2
        for i in range(1, len(row)):  # the average of two valid placements may still touch
            gap = (width[row[i - 1]] + width[row[i]]) / 2 + _GAP_X
            x[row[i]] = max(x[row[i]], x[row[i - 1]] + gap)

    for _ in range(2):
        for lay in range(1, rows):
            place(order[lay], up)
        for lay in range(rows - 2, -1, -1):
            place(order[lay], down)
    lo = min((x[v] - width[v] / 2 for v in range(len(x))), default=0.0)
    hi = max((x[v] + width[v] / 2 for v in range(len(x))), default=0.0)
    shift = _MARGIN - lo
    row_h = [0.0] * rows
    for v in range(n):
        row_h[layer_of[v]] = max(row_h[layer_of[v]], sizes[v][1])
    top = [0.0] * rows
    at = float(_MARGIN)
    for lay in range(rows):
        top[lay] = at
        at += row_h[lay] + _GAP_Y
    boxes = []
    for v in range(n):
        w, h = sizes[v]
        lay = layer_of[v]
        boxes.append((x[v] + shift - w / 2, top[lay] + (row_h[lay] - h) / 2, w, h))
    paths = []
    for chain in chains:
        sx, sy, sw, sh = boxes[chain[0]]
        pts = [(sx + sw / 2, sy + sh)]
        for d in chain[1:-1]:
            lay = layer_of[d]
            pts.append((x[d] + shift, top[lay]))
            pts.append((x[d] + shift, top[lay] + row_h[lay]))
        tx, ty, tw, _ = boxes[chain[-1]]
        pts.append((tx + tw / 2, ty))
        paths.append(pts)
    height = at - _GAP_Y + _MARGIN if rows else 2 * _MARGIN
    return _Layout(hi - lo + 2 * _MARGIN, height, boxes, paths)


# -- PNG ---------------------------------------------------------------------------------------
def _png(dag: Dag) -> bytes:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon, Rectangle
        from matplotlib.path import Path
    except ImportError:
        raise MissingDependencyError(
            "saving the picture as PNG needs matplotlib, which is not installed: pip "
            "install matplotlib (or save it as .svg, which needs nothing).") from None
    import io

    lay = dag._layout
    width = max(lay.width, _legend_width() + 2 * _MARGIN)
    height = lay.height + _LEGEND_H
    dpi = 100.0 * min(1.5, 30000 / max(width, height))  # Agg's limit: 2**16 px a side
    fig = Figure(figsize=(width / 100, height / 100), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    pt = _FONT * 72 / 100  # px of the SVG -> points at 100 px per inch
    oy = _LEGEND_H

    def arrow_head(x0: float, y0: float, x1: float, y1: float, ax_: Any) -> None:
        dx, dy = x1 - x0, y1 - y0
        norm = max((dx * dx + dy * dy) ** 0.5, 1e-9)
        ux, uy = dx / norm, dy / norm
        size = 8.0
        bx, by = x1 - ux * size, y1 - uy * size
        ax_.add_patch(Polygon([(x1, y1), (bx - uy * size / 2, by + ux * size / 2),
                               (bx + uy * size / 2, by - ux * size / 2)],
                              closed=True, color="#555", zorder=2))

    # legend
    x = float(_MARGIN)
    for status in reversed(STATUSES):
        fill, stroke = COLORS[status]
        ax.add_patch(FancyBboxPatch((x, 9), 14, 12, boxstyle="round,pad=0,rounding_size=3",
                                    facecolor=fill, edgecolor=stroke))
        ax.text(x + 19, 15, LEGEND[status], fontsize=pt, va="center", ha="left",
                family="sans-serif", parse_math=False)
        x += 19 + text_width(LEGEND[status]) + 14
    for label, style in (("requires", "solid"), ("optional", (0, (5, 4)))):
        ax.plot([x, x + 20], [15, 15], color="#555", linewidth=1.3, linestyle=style)
        arrow_head(x, 15, x + 24, 15, ax)
        ax.text(x + 30, 15, label, fontsize=pt, va="center", ha="left", family="sans-serif",
                parse_math=False)
        x += 30 + text_width(label) + 14

    for edge, pts in zip(dag.edges, lay.paths):
        pts = [(px, py + oy) for px, py in pts]
        verts = [pts[0]]
        codes = [Path.MOVETO]
        (x0, y0) = pts[0]
        last = len(pts) - 1
        for k, (x1, y1) in enumerate(pts[1:], start=1):
            if k == last:
                y1 -= 7  # leave room for the arrow head
            ym = (y0 + y1) / 2
            verts += [(x0, ym), (x1, ym), (x1, y1)]
            codes += [Path.CURVE4] * 3
            x0, y0 = x1, y1
        ax.add_patch(PathPatch(Path(verts, codes), facecolor="none", edgecolor="#555",
                               linewidth=1.3, linestyle=(0, (5, 4)) if edge.optional else "solid",
                               zorder=1))
        ex, ey = pts[-1]
        arrow_head(ex, ey - 8, ex, ey, ax)
    texts: list[tuple[Any, float]] = []
    for node, (bx, by, bw, bh) in zip(dag.nodes, lay.boxes):
        by += oy
        fill, stroke = COLORS[node.status]
        ax.add_patch(FancyBboxPatch((bx, by), bw, bh, boxstyle="round,pad=0,rounding_size=6",
                                    facecolor=fill, edgecolor=stroke, linewidth=1.5, zorder=3))
        for i, line in enumerate(node.lines):
            text = ax.text(bx + bw / 2, by + 18 + i * (_FONT + 4) - _FONT * 0.35, line,
                           fontsize=pt, ha="center", va="center", parse_math=False,
                           fontweight="bold" if i == 0 else "normal", family="sans-serif",
                           zorder=4)
            if text_width(line, bold=i == 0) * 1.3 > bw - 8:  # may not fit: measured below
                texts.append((text, bw - 8))
        if node.grouped:
            for status, _n, sx, dx in _bar_segments(node, bx + _PAD_X, bw - 2 * _PAD_X):
                ax.add_patch(Rectangle((sx, by + bh - _BAR_H - 6), dx, _BAR_H,
                                       facecolor=COLORS[status][1], edgecolor="none", zorder=4))
    # the font matplotlib has (DejaVu Sans, often) can be wider than the estimate the boxes
    # were sized by: shrink a line that would overflow its box
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for text, room in texts:
        wide = text.get_window_extent(renderer).width * 100 / dpi
        if wide > room:
            text.set_fontsize(pt * room / wide)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


# -- building ----------------------------------------------------------------------------------
def _shown(task: luigi.Task, params: dict[str, str], varying: set[str] | None) -> list[str]:
    """The parameters that distinguish ``task``, as ``name=value`` (clipped).

    Those varying among its family's instances in the picture, or (a family drawn once)
    those not at their default.
    """
    if varying is None:
        defaults = {}
        for name, p in task.get_params():
            default = getattr(p, "_default", None)
            if default is not None and default is not luigi.parameter._no_value:
                try:
                    defaults[name] = p.serialize(default)
                except Exception:  # noqa: BLE001 - a default that does not serialize: shown
                    continue
        names = [n for n in params if defaults.get(n, object()) != params[n]]
    else:
        names = [n for n in params if n in varying]
    items = [f"{n}={clip(clean(params[n]), _MAX_VALUE)}" for n in names[:_MAX_PARAMS]]
    if len(names) > _MAX_PARAMS:
        items.append(f"+{len(names) - _MAX_PARAMS} more")
    return items


def _param_lines(items: list[str]) -> list[str]:
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= _MAX_LINE:
            lines[-1] += ", " + item
        elif len(lines) < 2:
            lines.append(clip(item, _MAX_LINE))
        else:
            lines[-1] = clip(lines[-1] + ", …", _MAX_LINE)
            break
    return lines


def build_dag(plan: Plan, failures: dict[int, str] | None = None, group: bool = True,
              group_above: int = GROUP_ABOVE) -> Dag:
    """The picture of ``plan``'s graph.

    Args:
        plan: statuses of the graph to draw.
        failures: position -> first line of the error, for tasks whose last recorded run
            failed (drawn red, the error on hover).
        group: draw a family's many instances at the same depth as one box.
        group_above: group when there are more instances than this.
    """
    if isinstance(group_above, bool) or not isinstance(group_above, int) or group_above < 1:
        raise ParameterError(f"group_above={group_above!r}: give a whole number of tasks, "
                             f"at least 1 (a family with more instances than that at the "
                             f"same depth is drawn as one box).")
    failures = failures or {}
    g = plan.graph
    nodes = g.nodes
    layer = [0] * len(nodes)
    for i, deps in enumerate(g.deps):
        if deps:
            layer[i] = 1 + max(layer[d] for d in deps)
    status = ["failed" if i in failures and plan.status[i] is not Status.COMPLETE
              else plan.status[i].value.lower() for i in range(len(nodes))]
    params = [t.to_str_params(only_significant=True) for t in nodes]
    # which parameters vary within each family
    values: dict[str, dict[str, set[str]]] = {}
    count: dict[str, int] = {}
    for t, p in zip(nodes, params):
        fam = values.setdefault(t.task_family, {})
        count[t.task_family] = count.get(t.task_family, 0) + 1
        for k, v in p.items():
            fam.setdefault(k, set()).add(v)
    varying = {f: {k for k, vs in ps.items() if len(vs) > 1} for f, ps in values.items()}
    # boxes
    members: dict[tuple[str, int], list[int]] = {}
    for i, t in enumerate(nodes):
        members.setdefault((t.task_family, layer[i]), []).append(i)
    box_of = [0] * len(nodes)
    out_nodes: list[DagNode] = []
    for i, t in enumerate(nodes):
        key = (t.task_family, layer[i])
        grouped = group and len(members[key]) > group_above
        if grouped and members[key][0] != i:
            box_of[i] = box_of[members[key][0]]
            continue
        box_of[i] = len(out_nodes)
        if grouped:
            out_nodes.append(_group_node(f"n{len(out_nodes)}", [nodes[m] for m in members[key]],
                                         [status[m] for m in members[key]], plan, failures,
                                         members[key], layer[i]))
            continue
        shown = _shown(t, params[i], varying[t.task_family] if count[t.task_family] > 1
                       else None)
        lines = tuple(redact(line, t) for line in
                      [clip(clean(t.task_family), _MAX_LINE), *_param_lines(shown)])
        out_nodes.append(DagNode(f"n{len(out_nodes)}", t.task_family, lines, status[i],
                                 {status[i]: 1}, _title(t, i, status[i], plan, failures),
                                 layer[i], (t.task_id,)))
    edges: dict[tuple[int, int], bool] = {}
    for i in range(len(nodes)):
        opt = g.optional[i] if g.optional else frozenset()
        for d in g.deps[i]:
            pair = (box_of[d], box_of[i])
            edges[pair] = edges.get(pair, True) and d in opt
    return Dag(out_nodes, [DagEdge(a, b, o) for (a, b), o in edges.items()])


def _why(i: int, status: str, plan: Plan, failures: dict[int, str]) -> list[str]:
    lines = []
    if status == "failed":
        lines.append(f"last run failed: {failures[i]}")
    reason = plan.reasons.get(i)
    if reason and not reason.startswith("last run failed"):
        lines.append(reason)
    return lines


def _title(task: luigi.Task, i: int, status: str, plan: Plan, failures: dict[int, str]) -> str:
    lines = [describe(task), LEGEND[status].upper() if status != "failed" else "FAILED last time",
             *_why(i, status, plan, failures)]
    return redact("\n".join(clip(clean(line), 300) for line in lines), task)


def _group_node(key: str, tasks: list[luigi.Task], statuses: list[str], plan: Plan,
                failures: dict[int, str], positions: list[int], layer: int) -> DagNode:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    counts = {s: counts[s] for s in reversed(STATUSES) if s in counts}
    worst = next(s for s in STATUSES if s in counts)
    family = tasks[0].task_family
    head = clip(clean(f"{family} × {len(tasks)}"), _MAX_LINE)
    tally = ", ".join(f"{n} {s}" for s, n in counts.items())
    title = [f"{family}: {len(tasks)} tasks ({tally})"]
    shown = 0
    for t, s, i in zip(tasks, statuses, positions):
        if s != "complete" and shown < 8:
            why = "; ".join(_why(i, s, plan, failures))
            title.append(redact(clip(clean(f"{describe(t)}: {s.upper()}"
                                           + (f" - {why}" if why else "")), 300), t))
            shown += 1
    rest = sum(1 for s in statuses if s != "complete") - shown
    if rest > 0:
        title.append(f"... and {rest} more")
    values: dict[str, set[str]] = {}
    for t in tasks:
        for k, v in t.to_str_params(only_significant=True).items():
            values.setdefault(k, set()).add(v)
    varying = [f"{k} ({len(vs)} values)" for k, vs in values.items() if len(vs) > 1]
    if varying:
        title.insert(1, clip(clean("varying: " + ", ".join(varying)), 300))
    return DagNode(key, family, (head, clip(tally, _MAX_LINE)), worst, counts, "\n".join(title),
                   layer, tuple(t.task_id for t in tasks))


def _plural(n: int, word: str) -> str:
    """``1 task``, ``2 tasks``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


__all__ = ["COLORS", "FORMATS", "GROUP_ABOVE", "Dag", "DagEdge", "DagNode", "build_dag",
           "layered_layout"]
