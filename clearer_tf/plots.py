"""Pictures of a search: the found architecture and the alpha trajectories."""

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from clearer_tf import files  # noqa: E402
from clearer_tf.genotype import Genotype  # noqa: E402

_COLOURS = {"parallel": "#4C72B0", "fusion": "#DD8452", "stem": "#8C8C8C", "transition": "#55A868"}


def _save(fig, path):
    """Atomic save: render to a temporary file next to `path`, then rename."""
    try:
        with files.atomic_path(path, os.path.splitext(os.fspath(path))[1]) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_architecture(genotype, path):
    """Resolution branches as rows, columns as parallel/fusion (cf. supplementary Figs. 3-4).

    A parallel column is one box per branch; a fusion column is one box per
    branch joined by vertical links (every branch receives every other).
    """
    g = Genotype.coerce(genotype)
    n_rows = len(g.cells) + 1
    steps = [("stem", 1)]
    for cell, modules in enumerate(g.cells):
        steps.append(("transition", cell + 2))
        steps.extend((m, cell + 2) for m in modules)
    steps.append(("fusion", n_rows))  # head fusion to full resolution
    fig, ax = plt.subplots(figsize=(0.75 * len(steps) + 2, 0.9 * n_rows + 1.2))
    for x, (kind, branches) in enumerate(steps):
        for row in range(branches):
            ax.add_patch(
                FancyBboxPatch(
                    (x - 0.3, -row - 0.3), 0.6, 0.6, boxstyle="round,pad=0.02",
                    color=_COLOURS[kind], alpha=0.9,
                )
            )
        if kind == "fusion":
            ax.plot([x, x], [0, -(branches - 1)], color="k", lw=1.5)
        if x > 0:
            for row in range(min(branches, steps[x - 1][1])):
                ax.annotate("", (x - 0.3, -row), (x - 0.7, -row),
                            arrowprops=dict(arrowstyle="->", lw=0.8))
    ax.set_yticks([-r for r in range(n_rows)])
    ax.set_yticklabels([f"1/{2**r}" if r else "1" for r in range(n_rows)])
    ax.set_ylabel("resolution")
    ax.set_xticks([])
    ax.set_xlim(-0.8, len(steps) - 0.2)
    ax.set_ylim(-n_rows + 0.4, 0.8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
    ax.legend(handles, list(_COLOURS), loc="upper right", ncol=4, fontsize=8, frameon=False,
              bbox_to_anchor=(1.0, 1.25))
    ax.set_title(f"CLEARER genotype: {g.short()}", fontsize=9, loc="left")
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    _save(fig, path)


def plot_alpha_history(csv_path, path):
    """Softmax weight of the fusion module per column over the iterations.

    Reads the alpha-history CSV (column `iteration` and `w_fusion_<column>` or
    `cell<s>_col<c>_fusion`-style columns holding the fusion weight).
    """
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"alpha history {csv_path}: no rows to plot")
    keys = [k for k in rows[0] if "fusion" in k]
    its = [float(r["iteration"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis", max(len(keys), 1))
    for i, key in enumerate(keys):
        ax.plot(its, [float(r[key]) for r in rows], color=cmap(i), lw=1.2, label=key)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("iteration")
    ax.set_ylabel("softmax weight of fusion")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=3, loc="best")
    ax.set_title("alpha trajectories (above 0.5: fusion chosen)", fontsize=9)
    _save(fig, path)
