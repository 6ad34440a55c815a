"""The picture of a recalibration (``quotacast recalibrate --plot``): per node with a target,
the original target beside the recalibrated one, and P(attain) before -> after."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.schemas import HIERARCHY_LEVELS, KEY, LEVEL, LEVEL_COMPANY
from models.feasibility import TARGET
from models.feasibility.recalibration import (
    P_ATTAIN_AFTER,
    P_ATTAIN_BEFORE,
    RECALIBRATED_TARGET,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["MAX_PLOT_ROWS", "plot_recalibration", "plotted_nodes"]

# Rows of the picture at most: the company, regions and teams always, then reps (and any other
# level) up to this many.
MAX_PLOT_ROWS = 24


def plotted_nodes(frame: pd.DataFrame, limit: int = MAX_PLOT_ROWS) -> tuple[pd.DataFrame, int]:
    """The nodes drawn and how many targeted nodes were left out.

    Nodes with a target only, in hierarchy order (company, regions, teams, reps, then any
    other level such as product), each level in the frame's order. The company, regions and
    teams are always drawn; when the rest does not fit in ``limit`` rows, the nodes whose
    target moved most are kept.
    """
    targeted = frame[frame[TARGET].notna() & frame[RECALIBRATED_TARGET].notna()]
    depth = {level: i for i, level in enumerate(HIERARCHY_LEVELS)}
    rank = targeted[LEVEL].map(depth).fillna(len(HIERARCHY_LEVELS)).to_numpy()
    ordered = targeted.assign(_rank=rank, _row=np.arange(len(targeted)))
    top = ordered[ordered["_rank"] < depth[HIERARCHY_LEVELS[-1]]]
    rest = ordered[ordered["_rank"] >= depth[HIERARCHY_LEVELS[-1]]]
    room = max(limit - len(top), 0)
    if len(rest) > room:
        moved = (rest[RECALIBRATED_TARGET] - rest[TARGET]).abs()
        rest = rest.loc[moved.sort_values(ascending=False, kind="stable").index[:room]]
    shown = pd.concat([top, rest]).sort_values(["_rank", "_row"], kind="stable")
    return shown.drop(columns=["_rank", "_row"]), len(targeted) - len(shown)


def _money(value: float) -> str:
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:,.2f}M"
    if size >= 1e3:
        return f"{value / 1e3:,.1f}k"
    return f"{value:,.0f}"


def _share(p: float) -> str:
    return f"{p:.0%}" if np.isfinite(p) else "n/a"


def _panel(ax: Axes, part: pd.DataFrame) -> None:
    """One block of rows (the upper levels, or the reps) on its own scale."""
    from matplotlib.ticker import FuncFormatter

    labels = [LEVEL_COMPANY if lv == LEVEL_COMPANY else f"{lv} {k}"
              for lv, k in zip(part[LEVEL], part[KEY], strict=True)]
    before = part[TARGET].to_numpy(dtype=float)
    after = part[RECALIBRATED_TARGET].to_numpy(dtype=float)
    p_before = part[P_ATTAIN_BEFORE].to_numpy(dtype=float)
    p_after = part[P_ATTAIN_AFTER].to_numpy(dtype=float)
    y = np.arange(len(part))
    height = 0.38
    ax.barh(y - height / 2, before, height, color="0.72", label="original target")
    ax.barh(y + height / 2, after, height, color="C0", label="recalibrated target")
    for i in range(len(part)):
        ax.text(max(before[i], after[i], 0.0), i,
                f" {_money(after[i])}  P(attain) {_share(p_before[i])} \u2192 "
                f"{_share(p_after[i])}", va="center", fontsize=8)
    levels = part[LEVEL].to_numpy()
    for i in range(1, len(part)):
        if levels[i] != levels[i - 1]:
            ax.axhline(i - 0.5, color="0.85", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(part) - 0.5, -0.5)
    reach = float(np.nanmax(np.maximum(before, after)))
    ax.set_xlim(0, reach * 1.5 if reach > 0 else 1.0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _money(v)))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_recalibration(frame: pd.DataFrame, period: str, as_of: pd.Timestamp, path: Path, *,
                       method: str = "even_probability", limit: int = MAX_PLOT_ROWS) -> None:
    """Draw ``frame`` (the output of :func:`models.feasibility.recalibrate`) to ``path``:
    for every node drawn (:func:`plotted_nodes`) the original target beside the recalibrated
    one, labelled with P(attain) before -> after. ``frame`` must have a node with a target."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    shown, left_out = plotted_nodes(frame, limit)
    if shown.empty:
        raise ValueError("no node has a target: there is nothing to draw")
    depth = {level: i for i, level in enumerate(HIERARCHY_LEVELS)}
    upper = shown[LEVEL].map(depth).fillna(len(HIERARCHY_LEVELS)) < len(HIERARCHY_LEVELS) - 1
    panels = [part for part in (shown[upper.to_numpy()], shown[~upper.to_numpy()])
              if not part.empty]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.9 + 0.42 * len(shown)),
                             squeeze=False,
                             gridspec_kw={"height_ratios": [len(p) + 1 for p in panels]})
    for ax, part in zip(axes[:, 0], panels, strict=True):
        _panel(ax, part)
    axes[0, 0].legend(loc="lower right", fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("target for the whole period (closed revenue still counts)")
    more = f"; {left_out} more node(s) in the table" if left_out else ""
    fig.suptitle(f"Recalibrated targets for {period} as of {pd.Timestamp(as_of).date()} "
                 f"({method}; every parent's total kept)\n"
                 f"labels: recalibrated target, P(attain) original \u2192 recalibrated{more}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
