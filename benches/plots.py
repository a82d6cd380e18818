"""The comparison's plots, drawn from its results.json with matplotlib (Agg, no display):

    start-latency.png   every timed container start of every engine (a point each, a box per
                        engine; --network none and the default bridge), on a log axis, with the
                        VM's boot to power-off as a reference line that names its accelerator
    pull-build.png      the medians of pull, push, cold build and no-op rebuild per tool (bars,
                        min-max whiskers)

    .venv/bin/python benches/plots.py [DIR]     (default DIR: benches/results)

benches/compare.py calls make_plots() after each run. A tool that did not run is named in the
plot with "not available", as in the table. Each plot's subtitle has the date and the machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RESULTS: Final = Path(__file__).resolve().parent / "results"
START_PNG: Final = "start-latency.png"
PULL_BUILD_PNG: Final = "pull-build.png"
PYRUN_COLOR: Final = "#1f6fb4"
PEER_COLOR: Final = "#8a8a8a"
VM_COLOR: Final = "#c0392b"


class PlotsUnavailable(Exception):
    """matplotlib is missing; the message says how to get it."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(
            "plots not made: matplotlib is not installed (pip install -e '.[test]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _run_of(doc: dict[str, Any], cap: str) -> dict[str, Any]:
    run: dict[str, Any] = (doc.get("runs_by_capability") or {}).get(cap) or doc
    return run


def _subtitle(doc: dict[str, Any], caps: list[str]) -> str:
    """When and where the rows of these capabilities were measured."""
    dates = sorted({str(_run_of(doc, c).get("date", "?")) for c in caps})
    run = _run_of(doc, caps[0])
    m = run.get("machine") or doc.get("machine") or {}
    cores = str(m.get("cores", "?")).split()[0]
    cgroup = str(m.get("cgroup", "?")).split("->")[-1].strip()
    quick = " · quick mode (tiny inputs)" if run.get("quick", doc.get("quick")) else ""
    return (
        f"{', '.join(dates)} · {m.get('cpu', '?')}, {cores} cores, {m.get('memory', '?')}, "
        f"kernel {m.get('kernel', '?')}, cgroup {cgroup}{quick}"
    )


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _save(fig: Figure, path: Path) -> None:
    """Write the PNG atomically (a temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _start_rows(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, row) for every start row: --network none first, then the default bridge."""
    out: list[tuple[str, dict[str, Any]]] = []
    rows = doc.get("rows", [])
    for r in rows:
        if r["capability"] == "start":
            out.append((f"{r['tool']} · none", r))
    for r in rows:
        if r["capability"] == "bridge" and r["case"].startswith("busybox"):
            out.append((f"{r['tool']} · bridge", r))
    return out


def _vm_row(doc: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (r for r in doc.get("rows", []) if r["capability"] == "vm" and r["role"] != "pyrun"), None
    )


def plot_start(doc: dict[str, Any], path: Path) -> Path | None:
    """start-latency.png, or None when the results hold no start row."""
    rows = _start_rows(doc)
    if not rows:
        return None
    plt = _pyplot()
    vm = _vm_row(doc)
    fig: Figure
    ax: Axes
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 2.2))
    ys = list(range(len(rows)))[::-1]  # first row at the top
    ok_samples: list[float] = []
    for y, (_label, r) in zip(ys, rows, strict=True):
        color = PYRUN_COLOR if r["tool"].startswith("pyrun") else PEER_COLOR
        samples = [s for s in r.get("samples_s", []) if s > 0]
        if r["status"] != "ok" or not samples:
            ax.text(
                0.01,
                y,
                _short(f"not available: {r.get('reason') or 'no timed run'}", 95),
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=7.5,
                color="#555555",
                style="italic",
            )
            continue
        ok_samples += samples
        ax.boxplot(
            samples,
            positions=[y],
            orientation="horizontal",
            widths=0.55,
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": color, "alpha": 0.25, "edgecolor": color},
            medianprops={"color": color, "linewidth": 2},
            whiskerprops={"color": color},
            capprops={"color": color},
        )
        jitter = [y + 0.18 * (((i * 7919) % 13) / 12 - 0.5) for i in range(len(samples))]
        ax.scatter(samples, jitter, s=9, color=color, alpha=0.8, zorder=3)
        median = r.get("median_s") or 0.0
        ax.annotate(
            f"{median * 1000:.0f} ms" if median < 1 else f"{median:.2f} s",
            (max(samples), y),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    if vm is not None and vm["status"] == "ok" and vm.get("median_s"):
        accel = vm["tool"].rsplit("-accel", 1)[-1].strip().upper() or "?"
        ax.axvline(vm["median_s"], color=VM_COLOR, linestyle="--", linewidth=1.5)
        ax.text(
            vm["median_s"],
            0.5,
            f"VM boot to power-off, qemu {accel}: {vm['median_s']:.2f} s (median) ",
            transform=ax.get_xaxis_transform(),
            color=VM_COLOR,
            fontsize=8.5,
            rotation=90,
            ha="right",
            va="center",
        )
        ok_samples.append(vm["median_s"])
    elif vm is not None:
        fig.text(
            0.01,
            0.005,
            _short(f"VM baseline not available: {vm.get('reason')}", 140),
            fontsize=7.5,
            color=VM_COLOR,
        )
    ax.set_xscale("log")
    if ok_samples:
        ax.set_xlim(min(ok_samples) / 1.6, max(ok_samples) * 2.5)
    ax.set_yticks(ys, [label for label, _ in rows], fontsize=8.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("seconds, start to exit (log scale); each point one timed run")
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.set_title(
        "Container start to exit: busybox `true`, --rm  (none: --network none; bridge: each "
        "engine's default network)\n" + _subtitle(doc, ["start", "bridge", "vm"]),
        fontsize=9.5,
        loc="left",
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _panel_cases(doc: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    cases: dict[str, list[dict[str, Any]]] = {}
    for r in doc.get("rows", []):
        if r["capability"] in ("pull", "push", "build"):
            cases.setdefault(f"{r['capability']}: {r['case']}", []).append(r)
    return list(cases.items())


def plot_pull_build(doc: dict[str, Any], path: Path) -> Path | None:
    """pull-build.png, or None when the results hold no pull, push or build row."""
    panels = _panel_cases(doc)
    if not panels:
        return None
    plt = _pyplot()
    heights = [len(rows) for _, rows in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(10, 0.38 * sum(heights) + 1.1 * len(panels) + 0.8),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        ys = list(range(len(rows)))[::-1]
        top = max((r.get("max_s") or 0.0) for r in rows) or 1.0
        for y, r in zip(ys, rows, strict=True):
            color = PYRUN_COLOR if r["tool"].startswith("pyrun") else PEER_COLOR
            if r["status"] != "ok" or r.get("median_s") is None:
                ax.text(
                    0.01,
                    y,
                    _short(f"not available: {r.get('reason') or 'no timed run'}", 95),
                    transform=ax.get_yaxis_transform(),
                    va="center",
                    fontsize=7.5,
                    color="#555555",
                    style="italic",
                )
                continue
            med, lo, hi = r["median_s"], r.get("min_s") or r["median_s"], r.get("max_s")
            hi = hi if hi is not None else med
            ax.barh(y, med, height=0.6, color=color, alpha=0.75)
            ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], color="black", capsize=2, lw=0.8)
            ratio = r.get("ratio_peer_over_pyrun")
            extra = f"  ({ratio:.2f}x pyrun)" if ratio else ""
            ax.annotate(
                f"{med:.3f} s{extra}",
                (hi, y),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        tools = [f"{r['tool']} (info)" if r["role"] == "info" else r["tool"] for r in rows]
        ax.set_yticks(ys, tools, fontsize=8.5)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(0, top * 1.45)
        ax.set_title(_short(title, 110), fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.25)
    axes[-1, 0].set_xlabel("seconds (median of the timed runs; whiskers: min to max)")
    fig.suptitle(
        "Pull, push and build: pyrun and its peers\n" + _subtitle(doc, ["pull", "push", "build"]),
        fontsize=9.5,
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def make_plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Both plots into `out`; a plot whose capabilities have no rows is skipped. Raises
    PlotsUnavailable without matplotlib."""
    made = [plot_start(doc, out / START_PNG), plot_pull_build(doc, out / PULL_BUILD_PNG)]
    return [p for p in made if p is not None]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else RESULTS
    try:
        doc = json.loads((out / "results.json").read_text())
        made = make_plots(doc, out)
    except (OSError, ValueError) as e:
        print(f"plots: cannot read {out / 'results.json'}: {e}", file=sys.stderr)
        return 1
    except PlotsUnavailable as e:
        print(f"plots: {e}", file=sys.stderr)
        return 1
    for p in made:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
