"""Learning curves of every omni variant and the individually pruned models in one ``omni_vs_pruned`` output.

``omni_vs_pruned`` plots the step budgets and variants of its own invocation; its ``results.json`` keeps
every run and evaluation of the ``--out`` across invocations (e.g. ``--step_budgets=200,500`` with two
variants, then ``--step_budgets=1500`` with a third). This draws all of them: per tier, test WER vs steps
per model for the pruned models (protocol ``steps``) and for each omni variant found (runs ``omni_s{B}`` =
``base``, ``omni_<variant>_s{B}``).

Usage:
  python -m benchmarks.plot_curves --results=runs/compare_shipped/results.json --output=curves_all.png
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
RUN = re.compile(r"^(?:pruned_(?P<tier>[a-z0-9_]+?)|omni(?:_(?P<variant>[a-z0-9_]+?))?)"
                 r"_s(?P<steps>\d+)/(?P<eval>.+)$")


def curves(evals: Mapping[str, Mapping[str, Any]], pruned_budgets: set[int]
           ) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{tier: {series: [(steps, WER %)]}}`` from ``results.json``'s ``evals``. Series: ``pruned`` (runs
    whose steps are a budget: protocol ``steps``; the protocol-``compute`` runs have other step counts) and
    ``omni <variant>``."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for key, value in evals.items():
        m = RUN.match(key)
        if not m:
            continue
        steps, tier = int(m["steps"]), m["eval"]
        if m["tier"] is not None:
            if m["tier"] != tier or steps not in pruned_budgets:
                continue
            series = "pruned"
        else:
            series = f"omni {m['variant'] or 'base'}"
        out.setdefault(tier, {}).setdefault(series, []).append((steps, 100.0 * float(value["wer"])))
    return {t: {s: sorted(p) for s, p in sorted(v.items())} for t, v in out.items()}


def main(argv: list[str]) -> None:
    del argv
    with open(FLAGS.results) as f:
        data = json.load(f)
    budgets = {int(r["steps"]) for name, r in data["runs"].items()
               if name.startswith("omni") and "steps" in r}
    by_tier = curves(data["evals"], budgets)
    tiers = [t for t in FLAGS.tier_names if t in by_tier] or sorted(by_tier)
    fig, axes = plt.subplots(1, len(tiers), figsize=(4.4 * len(tiers), 4), squeeze=False)
    for ax, tier in zip(axes[0], tiers, strict=True):
        for series, points in by_tier[tier].items():
            ax.plot(*zip(*points, strict=True), marker="o", label=series,
                    linewidth=2.5 if series == "pruned" else 1.5)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ticks = sorted({s for points in by_tier[tier].values() for s, _ in points})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(s) for s in ticks])
        ax.set_title(tier)
        ax.set_xlabel("training steps per model")
        ax.set_ylabel("test WER %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FLAGS.output, dpi=90)
    for tier in tiers:
        print(tier, by_tier[tier])


if __name__ == "__main__":
    flags.DEFINE_string("results", None, "results.json of a benchmarks/omni_vs_pruned.py --out.",
                        required=True)
    flags.DEFINE_string("output", None, "PNG file to write.", required=True)
    flags.DEFINE_list("tier_names", ["speaker", "phone", "wearable"], "Names of the tiers to plot, in this "
                      "order (names only: not --tiers' name=kind:value items).")
    app.run(main)
