"""PNG of the fitted alpha (or, with one parent, the cosine) per layer and component.

Called by `__main__` after report.py. matplotlib is an optional extra
(`pip install 'rio-sglang[provenance]'`): without it the plot is skipped and the reason returned.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path


def plot_groups(summary: dict, path: Path) -> str | None:
    """Write the plot to `path`; returns why it was skipped, or None once written."""
    try:
        import matplotlib
    except ImportError:
        return ("matplotlib is not installed: PNG skipped "
                "(pip install 'rio-sglang[provenance]' for the plot)")
    matplotlib.use("Agg")  # files only: no display is needed or wanted
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = [g for g in summary["groups"] if g["layer"] is not None and math.isfinite(g["median"])]
    if not groups:
        return "no language-model layer was compared: nothing to plot"
    value = groups[0]["value"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for component in sorted({g["component"] for g in groups}):
        gs = [g for g in groups if g["component"] == component]
        ax.errorbar([g["layer"] for g in gs], [g["median"] for g in gs],
                    yerr=[[g["median"] - g["min"] for g in gs], [g["max"] - g["median"] for g in gs]],
                    fmt="o-", ms=3, capsize=2, label=component)
    if "global_alpha" in summary:
        ax.axhline(summary["global_alpha"], color="k", lw=0.8, ls="--",
                   label=f"global alpha {summary['global_alpha']:.3f}")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{value} (median, min-max bars)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(textwrap.fill(summary["verdict"], 130), fontsize=8)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
