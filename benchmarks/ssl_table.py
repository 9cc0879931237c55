"""Markdown tables of an SSL benchmark result (``dinomix bench ssl``'s JSON), for the README.

    python -m benchmarks.ssl_table benchmarks/results/ssl_phantom.json
    python -m benchmarks.ssl_table OLD.json NEWER.json --json MERGED.json

Several results make one table: a method's run for a seed comes from the last file that has
it, so rows re-run under a new default replace the old ones without retraining the rest;
every run keeps the file it came from (``source``). Prints the per-method table (mean over seeds, ± the spread between seeds, per-class Dice) and
a per-seed table, so a difference between two methods can be read seed by seed rather than
only through the means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHORT = {
    "spleen": "spleen", "right_kidney": "R kid", "left_kidney": "L kid", "gallbladder": "gallbl",
    "esophagus": "esoph", "liver": "liver", "stomach": "stom", "aorta": "aorta", "inferior_vena_cava": "IVC",
    "portal_vein_and_splenic_vein": "PV/SV", "pancreas": "panc", "right_adrenal_gland": "R adr",
    "left_adrenal_gland": "L adr",
}


def _f(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def method_table(doc: dict) -> str:
    methods = doc["methods"]
    classes = list(next(iter(methods.values()))["per_class"])
    head = ["method", "seeds", "mean Dice %", "tail Dice %", "mean HD95 mm", *(SHORT.get(c, c) for c in classes)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, row in methods.items():
        seeds = ",".join(str(r["seed"]) for r in sorted(doc["runs"][name], key=lambda r: r["seed"]))
        cells = [name, seeds, f"{_f(row['mean_dice'])} ± {_f(row['mean_dice_std'])}",
                 f"{_f(row['tail_dice'])} ± {_f(row['tail_dice_std'])}", _f(row["mean_hd95_mm"]),
                 *(_f(row["per_class"][c]["dice"]) for c in classes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(doc: dict) -> str:
    seeds = sorted({r["seed"] for runs in doc["runs"].values() for r in runs})
    head = ["method", *(f"seed {s} mean / tail" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(seeds)]
    for name, runs in doc["runs"].items():
        by_seed = {r["seed"]: r for r in runs}
        cells = [f"{_f(by_seed[s]['mean_dice'])} / {_f(by_seed[s]['tail_dice'])}" if s in by_seed else "–" for s in seeds]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def clean_up_table(doc: dict) -> str | None:
    """Raw vs cleaned-up test scores per method (``postprocessing`` in the JSON), or None if absent."""
    methods = {m: r for m, r in doc["methods"].items() if r.get("postprocessing")}
    if not methods:
        return None
    head = ["method", "raw mean / tail / HD95", "clean-up as decided (auto)", "largest piece of every organ"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|"]

    def cell(row):
        return f"{_f(row['mean_dice'])} / {_f(row['tail_dice'])} / {_f(row['mean_hd95_mm'])}"

    for name, row in methods.items():
        pp = row["postprocessing"]
        lines.append(f"| {name} | {cell(row)} | {cell(pp['auto'])} | {cell(pp['largest'])} |")
    return "\n".join(lines)


def merge_results(paths: list[Path]) -> dict:
    """One result from several: per (method, seed), the run of the last file that has it.

    Methods keep their order of first appearance; their rows are averaged again over the
    merged runs. ``protocol`` and ``machine`` are the first file's, ``sources`` lists every file."""
    from dinomix_core.benchmarking.ssl import average_runs

    docs = [(Path(p), json.loads(Path(p).read_text())) for p in paths]
    runs: dict[str, dict[int, dict]] = {}
    for path, doc in docs:
        for method, reports in doc["runs"].items():
            for report in reports:
                runs.setdefault(method, {})[report["seed"]] = {**report, "source": report.get("source", path.name)}
    merged = dict(docs[0][1])
    merged["runs"] = {m: [by_seed[s] for s in sorted(by_seed)] for m, by_seed in runs.items()}
    merged["methods"] = {m: average_runs(rs) for m, rs in merged["runs"].items()}
    merged["sources"] = [p.name for p, _ in docs]
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, nargs="+", help="JSON written by `dinomix bench ssl` (later files win per method and seed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the merged result here")
    args = parser.parse_args(argv)
    doc = merge_results(args.result) if len(args.result) > 1 else json.loads(args.result[0].read_text())
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    tail = next(iter(doc["methods"].values())).get("tail_classes")
    print(method_table(doc))
    print(f"\ntail classes: {', '.join(tail or [])}\n")
    print(seed_table(doc))
    cleaned = clean_up_table(doc)
    if cleaned:
        print("\nmask clean-up (Dice %, HD95 mm):\n")
        print(cleaned)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
