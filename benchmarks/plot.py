"""
Draw the curves the benchmarks wrote as JSON: one plot per axis, one line
per series, as PNG or SVG files in a folder (docs/performance by default).

Reads the files of C{scaling.py --json} and C{e2e_resources.py --json}:
an C{axes} object whose every axis has a label C{x} and C{series} of
points C{{x, <measure>...}}; each numeric measure of the points is drawn
against C{x}, on logarithmic axes for x when it spans more than two
decades.

  .venv/bin/pip install matplotlib        # or: pip install '.[bench]'
  .venv/bin/python benchmarks/plot.py docs/performance/scaling.json
  .venv/bin/python benchmarks/plot.py --format svg docs/performance/*.json

Each plot is named after the file and the axis and the measure, e.g.
C{scaling-requesters-cpu_us_per_iq.png}, and is captioned with the
machine and the command that made the figures.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LABELS = {
    "cpu_us_per_iq": "component CPU per IQ (us)",
    "cpu_us_per_presence": "component CPU per presence stanza (us)",
    "bytes_per_proxy": "memory allocated per proxy (bytes)",
    "throughput_iq_s": "throughput (IQ/s)",
    "ratio_to_two": "throughput against 2 resources, same run",
}


def draw(path: Path, out: Path, format: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py needs matplotlib: pip install matplotlib (or the bench extra)")
    figures = json.loads(path.read_text())
    written = []
    caption = "%s\n%s" % (figures.get("command", ""), _machine(figures.get("machine", "")))
    for axis, content in figures["axes"].items():
        measures = sorted(
            {
                name
                for points in content["series"].values()
                for point in points
                for name, value in point.items()
                if name != "x" and isinstance(value, (int, float))
            }
        )
        for measure in measures:
            fig, ax = plt.subplots(figsize=(7, 4.2))
            xs = []
            for series, points in sorted(content["series"].items()):
                shown = [p for p in points if measure in p]
                if not shown:
                    continue  # a series without this measure (direct has no ratio)
                xs += [p["x"] for p in shown]
                ax.plot(
                    [p["x"] for p in shown],
                    [p[measure] for p in shown],
                    marker="o",
                    label=series,
                )
            if xs and min(xs) > 0 and max(xs) / min(xs) > 100:
                ax.set_xscale("log")
            ax.set_xlabel(content["x"])
            ax.set_ylabel(LABELS.get(measure, measure))
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if len(content["series"]) > 1:
                ax.legend(fontsize="small")
            fig.text(0.01, 0.01, caption, fontsize=6, va="bottom", family="monospace")
            fig.tight_layout(rect=(0, 0.06, 1, 1))
            target = out / ("%s-%s-%s.%s" % (path.stem, axis, measure, format))
            fig.savefig(target, format=format, dpi=100)
            plt.close(fig)
            written.append(target)
    return written


def _machine(machine) -> str:
    if isinstance(machine, dict):
        return ", ".join("%s %s" % (k, v) for k, v in sorted(machine.items()) if k != "load_average")
    return str(machine)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance")
    parser.add_argument("--format", choices=("png", "svg"), default="png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.files:
        for target in draw(path, args.out, args.format):
            print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
