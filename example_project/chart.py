"""The model comparison chart: the test score of every model, scaled and raw features.

One row per model (best at the top), one dot per preprocessing option, each with its value
written next to it. The scores of the models differ by a few hundredths of R² or less, so
the axis spans the results, not 0 to 1: bars starting at 0 would all look the same length.
The axis label says when it does not start at 0.

Only pandas and matplotlib are needed (no task code): ``run.py`` saves the chart as a PNG
and the notebook shows it inline.
"""

from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

#: how a metric is named on the chart, and whether higher is better
METRICS = {
    "r2": ("R²", True),
    "rmse": ("RMSE", False),
    "mae": ("MAE", False),
}
COLORS = {True: "tab:blue", False: "tab:orange"}
LABELS = {True: "standard scaled", False: "raw features"}
MARKERS = {True: "o", False: "s"}
PADDING = 0.08  # the margin either side of the results, as a share of their spread


def axis_limits(values, padding=PADDING):
    """The axis range for ``values``: their spread, plus ``padding`` of it either side.

    Starting the axis at 0 would hide differences of a few hundredths in a score near 0.5.
    Identical values get a small range around them.
    """
    low, high = float(min(values)), float(max(values))
    margin = (high - low) * padding or max(abs(high) * 0.01, 0.01)
    return low - margin, high + margin


def comparison_figure(table, metric="r2", title="Diabetes progression"):
    """A dot plot of ``metric`` per model, scaled and raw features side by side.

    Args:
        table: one row per flow, with columns ``model``, ``do_preprocess`` and ``metric``
            (``WorkflowMulti.results(TaskEvaluate)`` gives it).
        metric: the column to plot.
        title: the start of the chart's title.

    Returns:
        A matplotlib ``Figure`` (shown inline in Jupyter; ``fig.savefig(path)`` writes it).
    """
    name, higher_is_better = METRICS.get(metric, (metric, True))
    best_of = table.groupby("model")[metric].max() if higher_is_better \
        else table.groupby("model")[metric].min()
    # best at the top: matplotlib draws row 0 at the bottom
    models = list(best_of.sort_values(ascending=not higher_is_better).index[::-1])

    fig = Figure(figsize=(8, 0.62 * len(models) + 1.9))
    ax = fig.add_subplot()
    for row, model in enumerate(models):
        scores = table[table["model"] == model]
        values = scores[metric]
        ax.plot([values.min(), values.max()], [row, row], color="0.75", linewidth=2, zorder=1)
        for preprocess, value in zip(scores["do_preprocess"], values):
            preprocess = bool(preprocess)
            ax.scatter(value, row, s=60, color=COLORS[preprocess], marker=MARKERS[preprocess],
                       zorder=2)
            # scaled above the dot, raw below it: the labels of two close dots never overlap
            ax.annotate(f"{value:.3f}", (value, row), xytext=(0, 9 if preprocess else -9),
                        textcoords="offset points", ha="center",
                        va="bottom" if preprocess else "top", fontsize=8,
                        color=COLORS[preprocess])
    best = table[metric].max() if higher_is_better else table[metric].min()
    ax.axvline(best, color="0.5", linestyle=":", linewidth=1, zorder=0)

    low, high = axis_limits(table[metric])
    ax.set_xlim(low, high)
    ax.set_ylim(-0.7, len(models) - 0.3)
    ax.set_yticks(range(len(models)), models)
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    direction = "higher" if higher_is_better else "lower"
    label = f"test {name} ({direction} is better)"
    if low > 0 or high < 0:
        label += "; the axis is zoomed on the results, it does not start at 0"
    ax.set_xlabel(label)
    ax.set_ylabel("model")
    ax.set_title(f"{title}: test {name} per model, with and without scaling", fontsize=11)
    handles = [ax.scatter([], [], color=COLORS[p], marker=MARKERS[p]) for p in (True, False)]
    # the best model is the top row, its dots at the best end: the other corner is free
    ax.legend(handles, [LABELS[True], LABELS[False]], fontsize=8,
              loc="upper left" if higher_is_better else "upper right")
    fig.tight_layout()
    return fig


def save_chart(table, path, metric="r2"):
    """Write the chart of ``metric`` to ``path`` (a ``.png``); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comparison_figure(table, metric).savefig(path, dpi=100)
    return path
