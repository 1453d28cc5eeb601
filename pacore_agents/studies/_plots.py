"""PNG plots of a study (matplotlib, Agg backend; never opens a window).

- ``accuracy_vs_ttc.png``: accuracy (with its 95% interval) against mean effective TTC,
  log x axis, one marker per arm row (circles: topology arms; hollow squares: self-consistency,
  which sits at the TTC of the arm it matches; triangles: single).
- ``accuracy_vs_cost.png`` (engines that declare costs): the same markers against mean
  declared cost per sample (``cost.csv``'s rows, its data; log x when every cost is > 0), each
  self-consistency row at the cost of its N trajectories.
- ``scaling.png`` (studies with sweeps): the paper's scaling plot, accuracy (95% interval
  bars) against mean effective TTC (log x): a solid line per sweep along its graph axes
  (topology, widths, topology params; a separate line per value of its other axes, e.g. a
  temperature), and a dashed line of hollow squares per self-consistency arm through its rows
  matched to swept arms (one point per vote size N: the same budgets, on the same axes);
  dotted horizontal lines mark the single baselines.
- ``rounds.png``: per-round message accuracy and consensus, one line per arm row.
- ``topology_<arm>.png``: each topology arm's unrolled graph, laid out by round (x = round,
  y = agent, centred), nodes coloured by role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ._metrics import ArmMetrics


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ttc_axes(ax: Any, title: str, *, legend_size: int) -> None:
    """Accuracy (0..1, its 95% interval) against mean effective TTC on a log axis."""
    ax.set_xscale("log")
    ax.set_xlabel("mean effective TTC per sample (tokens, log scale)")
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")
    ax.set_title(title)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_STYLES = {"topology": ("o", 7, "full"), "self-consistency": ("s", 11, "none"), "single": ("^", 8, "full")}


def plot_accuracy_vs_ttc(metrics: Sequence[ArmMetrics], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = _STYLES
    for i, m in enumerate(metrics):
        if m.accuracy is None:
            continue
        lo, hi = m.ci_low or 0.0, m.ci_high or 0.0
        marker, size, fill = styles.get(m.kind, ("D", 7, "full"))
        ax.errorbar([max(m.mean_ttc, 1.0)], [m.accuracy],
                    yerr=[[max(0.0, m.accuracy - lo)], [max(0.0, hi - m.accuracy)]],
                    fmt=marker, markersize=size, fillstyle=fill, markeredgewidth=1.6, capsize=4,
                    color=f"C{i % 10}", label=m.label)
    _ttc_axes(ax, "Accuracy vs effective test-time compute", legend_size=8)
    return _save(plt, fig, path)


def plot_accuracy_vs_cost(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``rows``: ``cost.csv``'s (``_costs.cost_rows``); see the module for what is drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    graded = [r for r in rows if r["accuracy"] is not None]
    for i, r in enumerate(graded):
        acc, lo, hi = r["accuracy"], r["ci_low"] or 0.0, r["ci_high"] or 0.0
        marker, size, fill = _STYLES.get(r["kind"], ("D", 7, "full"))
        on = f" (matched on {r['match_on']})" if r.get("match_on") else ""
        ax.errorbar([r["mean_cost"]], [acc], yerr=[[max(0.0, acc - lo)], [max(0.0, hi - acc)]],
                    fmt=marker, markersize=size, fillstyle=fill, markeredgewidth=1.6, capsize=4,
                    color=f"C{i % 10}", label=r["label"] + on)
    unit = rows[0]["cost_unit"] if rows else "price"
    positive = bool(graded) and all(r["mean_cost"] > 0 for r in graded)
    if positive:
        ax.set_xscale("log")
    ax.set_xlabel("mean declared cost per sample" + (" (price units" if unit == "price" else " (FLOPs")
                   + (", log scale)" if positive else ")"))
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    if graded:
        ax.legend(fontsize=8, loc="best")
    ax.set_title("Accuracy vs declared cost")
    return _save(plt, fig, path)


def _line_key(point: Mapping[str, Any]) -> str:
    """The non-graph axes of a sweep point, as a legend suffix ('' if none)."""
    from ._sweeps import format_value

    graph = {"topology", "widths"}
    other = {k: v for k, v in point.items()
             if k not in graph and (k.endswith("_temperature") or k in _OTHER_AXES)}
    return ", ".join(f"{k}={format_value(v)}" for k, v in sorted(other.items()))


_OTHER_AXES = {"temperature", "max_tokens", "compaction", "order", "max_message_tokens"}


class ScalingLine(BaseModel):
    """One line of the scaling plot: its legend, its rows (by mean TTC, graded rows only),
    dashed for self-consistency."""

    label: str
    dashed: bool
    rows: list[ArmMetrics]


def scaling_lines(metrics: Sequence[ArmMetrics],
                  sweeps: Mapping[str, tuple[str, Mapping[str, Any]]]) -> list[ScalingLine]:
    """The lines of the scaling plot (see the module), in drawing order; ``sweeps``: arm ->
    (sweep id, sweep point). The single baselines are not lines (the plot marks them apart)."""
    lines: dict[tuple[str, str], list[str]] = {}
    for arm, (sweep, point) in sweeps.items():
        lines.setdefault((sweep, _line_key(point)), []).append(arm)
    by_arm = {m.arm: m for m in metrics if m.kind != "self-consistency"}

    def graded(rows: Sequence[ArmMetrics]) -> list[ArmMetrics]:
        return sorted((m for m in rows if m.accuracy is not None), key=lambda m: m.mean_ttc)

    out = [ScalingLine(label=sweep + (f" ({key})" if key else ""), dashed=False,
                       rows=graded([by_arm[a] for a in arms if a in by_arm]))
           for (sweep, key), arms in sorted(lines.items())]
    votes: dict[tuple[str, int | None], ArmMetrics] = {}  # one point per SC arm and vote size
    for m in metrics:
        if m.kind == "self-consistency" and m.matched_arm in sweeps:
            votes.setdefault((m.arm, m.vote_size), m)
    out += [ScalingLine(label=f"{sc}: self-consistency at the matched budgets", dashed=True,
                        rows=graded([m for (arm, _), m in votes.items() if arm == sc]))
            for sc in sorted({arm for arm, _ in votes})]
    return out


def plot_scaling(metrics: Sequence[ArmMetrics], sweeps: Mapping[str, tuple[str, Mapping[str, Any]]],
                 path: Path) -> Path:
    """``sweeps``: arm -> (sweep id, sweep point). See the module for what is drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    drawn = scaling_lines(metrics, sweeps)
    n_solid = sum(not line.dashed for line in drawn)
    for i, line in enumerate(drawn):
        j = i - n_solid  # the index of a dashed line among the dashed ones
        color = f"C{i % 10}" if not line.dashed else ("black" if j == 0 else f"C{(n_solid + j) % 10}")
        if not line.rows:
            continue
        rows = line.rows
        acc = [m.accuracy or 0.0 for m in rows]
        err = [[max(0.0, a - (m.ci_low or 0.0)) for a, m in zip(acc, rows, strict=True)],
               [max(0.0, (m.ci_high or 0.0) - a) for a, m in zip(acc, rows, strict=True)]]
        ax.errorbar([max(m.mean_ttc, 1.0) for m in rows], acc, yerr=err, color=color, capsize=3,
                    linestyle="--" if line.dashed else "-", marker="s" if line.dashed else "o",
                    fillstyle="none" if line.dashed else "full", markersize=7, label=line.label)
    for m in metrics:
        if m.kind == "single" and m.accuracy is not None:
            ax.axhline(m.accuracy, color="gray", linestyle=":", linewidth=1)
            ax.annotate(m.label, (0.01, m.accuracy), xycoords=("axes fraction", "data"), ha="left",
                        va="bottom", fontsize=7, color="gray")
    _ttc_axes(ax, "Scaling: accuracy vs effective test-time compute", legend_size=7)
    return _save(plt, fig, path)


def plot_rounds(metrics: Sequence[ArmMetrics], path: Path) -> Path:
    plt = _pyplot()
    fig, (acc_ax, con_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in metrics:
        rounds = [r.round for r in m.rounds]
        acc_ax.plot(rounds, [r.accuracy if r.accuracy is not None else float("nan") for r in m.rounds],
                    marker="o", label=m.label)
        con_ax.plot(rounds, [r.consensus for r in m.rounds], marker="o", label=m.label)
    for ax, title in ((acc_ax, "accuracy of the messages per round"), (con_ax, "consensus per round")):
        ax.set_xlabel("round")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.set_ylabel("share")
    con_ax.legend(fontsize=8, loc="best")
    return _save(plt, fig, path)


def plot_topology(name: str, node_link: Mapping[str, Any], path: Path) -> Path:
    """Draw an unrolled topology from its node-link data (node ids like ``r2.a0``)."""
    import networkx as nx

    plt = _pyplot()
    graph = nx.node_link_graph(dict(node_link), edges="edges")
    rounds: dict[int, list[str]] = {}
    for node in graph.nodes:
        rounds.setdefault(int(str(node)[1:].split(".a")[0]), []).append(str(node))
    pos = {}
    for r, nodes in rounds.items():
        nodes.sort(key=lambda n: int(n.split(".a")[1]))
        for i, n in enumerate(nodes):
            pos[n] = (r, (len(nodes) - 1) / 2 - i)
    last = max(rounds)

    def role(node: str) -> str:
        r = int(node[1:].split(".a")[0])
        default = "sink" if r == last else ("explorer" if r == 1 else "synthesizer")
        return str(graph.nodes[node].get("role") or default)

    roles = [role(str(n)) for n in graph.nodes]
    palette = {name: f"C{i}" for i, name in enumerate(sorted(set(roles)))}
    width = max(len(n) for n in rounds.values())
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(rounds), 1.5 + 0.45 * width))
    nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.35, arrows=True, arrowsize=8,
                           node_size=260)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=260,
                           node_color=[palette[r] for r in roles])
    if width <= 16:
        nx.draw_networkx_labels(graph, pos, ax=ax, labels={n: n.split(".")[1] for n in graph.nodes},
                                font_size=6)
    ax.set_xticks(sorted(rounds))
    ax.set_xticklabels([f"round {r}" for r in sorted(rounds)])
    ax.tick_params(left=False, labelleft=False, bottom=True, labelbottom=True)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=r) for r, c in palette.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{name}: widths {[len(rounds[r]) for r in sorted(rounds)]}")
    return _save(plt, fig, path)
