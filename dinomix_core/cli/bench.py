"""`dinomix bench`: reproducible benchmarks (results as JSON with the machine they ran on)."""

from __future__ import annotations

import argparse
import json

from dinomix_core.cli._progress import ConsoleProgress
from dinomix_core.cli._train_args import triple


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: SSL methods on the phantom, step cost, Synapse/AMOS recipes",
                       description="Benchmarks; see benchmarks/README.md for recorded results.")
    bs = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)

    s = bs.add_parser("ssl", help="supervised / mean teacher / +PIC / +FKD / DINO-Mix on the phantom, several seeds")
    s.add_argument("--out", default="bench_ssl")
    s.add_argument("--json", default=None, help="result JSON (default: OUT/ssl_phantom.json)")
    s.add_argument("--methods", default="supervised,mean-teacher,pic,fkd,dinomix")
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("--steps", type=int, default=1650, help="training steps of every run (default 1650, the recorded table)")
    s.add_argument("--labeled", type=int, default=2)
    s.add_argument("--unlabeled", type=int, default=8)
    s.add_argument("--test", type=int, default=4)
    s.add_argument("--patch", type=triple, default=(16, 64, 64))
    s.add_argument("--width", type=int, default=8)
    s.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--depth", type=int, default=3)
    s.add_argument("--teacher", default="random", help="DINOv3 weights path, or 'random'")
    s.add_argument("--size", choices=("small", "medium"), default="small")
    s.add_argument("--device", choices=("cuda", "cpu"), default=None)
    s.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes (default 1)")
    s.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="pick the step count (same for every method) from a short probe so all runs fit; "
                        "overrides --steps")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override a training-config field for every method, e.g. --set lambda_u=0.5 (repeatable)")
    s.add_argument("--resume", action="store_true",
                   help="reuse runs in OUT that finished with the same config (re-scored, not retrained)")
    s.set_defaults(func=_ssl)

    c = bs.add_parser("step-cost", help="DINO-Mix step time / mean-teacher step time, token cache on and off")
    c.add_argument("--out", default="bench_step_cost")
    c.add_argument("--json", default=None)
    c.add_argument("--steps", type=int, default=10)
    c.add_argument("--warmup", type=int, default=3)
    c.add_argument("--patch", type=triple, default=(32, 64, 64))
    c.add_argument("--width", type=int, default=16)
    c.add_argument("--depth", type=int, default=3)
    c.add_argument("--size", choices=("small", "medium"), default="small")
    c.add_argument("--teacher", default="random")
    c.add_argument("--device", choices=("cuda", "cpu"), default=None)
    c.add_argument("--profile", default=None, metavar="FILE", help="also write a per-operator profile table here")
    c.set_defaults(func=_step_cost)

    for name in ("synapse", "amos"):
        r = bs.add_parser(name, help=f"DHC protocol on {name.capitalize()} (needs the data set in nnU-Net layout)")
        r.add_argument("--data", required=True, help="nnU-Net folder of the data set (imagesTr, labelsTr, dataset.json)")
        r.add_argument("--split", required=True, help="DHC split folder, e.g. ../shared/data/splits/DHC/synapse_data_at_3a09c34")
        r.add_argument("--labeled-file", default=None, help="labeled split file name (default: labeled_20p.txt / labeled_5p.txt)")
        r.add_argument("--out", required=True)
        r.add_argument("--json", default=None)
        r.add_argument("--method", default="dinomix")
        r.add_argument("--steps", type=int, default=30_000)
        r.add_argument("--patch", type=triple, default=(64, 128, 128))
        r.add_argument("--width", type=int, default=16)
        r.add_argument("--depth", type=int, default=4)
        r.add_argument("--inplane-downsample", type=int, default=None)
        r.add_argument("--teacher", default=None, help="DINOv3 weights path, 'random', or default: installed weights")
        r.set_defaults(func=_recipe, bench_name=name)


def _print(doc: dict, keys: list[str]) -> None:
    print(json.dumps({k: doc.get(k) for k in keys}, indent=1))


def _ssl(args) -> int:
    from pathlib import Path

    from dinomix_core.benchmarking.ssl import run_ssl_benchmark

    out = Path(args.out)
    doc = run_ssl_benchmark(
        out, methods=[m for m in args.methods.split(",") if m], seeds=[int(s) for s in args.seeds.split(",") if s],
        labeled=args.labeled, unlabeled=args.unlabeled, test=args.test, steps=args.steps, patch=args.patch,
        width=args.width, depth=args.depth, teacher=args.teacher, size=args.size, device=args.device,
        optimizer=args.optimizer, lr=args.lr, jobs=args.jobs, time_budget_s=args.time_budget,
        overrides=_parse_overrides(args.overrides), resume=args.resume,
        result_json=args.json or out / "ssl_phantom.json", log=lambda line: print(line, flush=True),
    )
    print(f"{'method':<14}{'mean Dice %':>12}{'tail Dice %':>12}  (teacher: {doc['teacher']})")
    for method, row in doc["methods"].items():
        print(f"{method:<14}{_fmt(row['mean_dice']):>12}{_fmt(row['tail_dice']):>12}")
    return 0


def _parse_overrides(items: list[str]) -> dict:
    """``FIELD=VALUE`` pairs for TrainConfig; values are JSON when they parse (numbers, true, lists)."""
    import dataclasses
    import json

    from dinomix_core.engine.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of the training config's fields")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _step_cost(args) -> int:
    from pathlib import Path

    from dinomix_core.benchmarking.step_cost import run_step_cost

    out = Path(args.out)
    doc = run_step_cost(out, steps=args.steps, warmup=args.warmup, patch=args.patch, width=args.width, depth=args.depth,
                        size=args.size, teacher_weights=args.teacher, device=args.device,
                        result_json=args.json or out / "step_cost.json", profile_path=args.profile)
    _print(doc, ["ratio_cache_on", "ratio_cache_off", "median_step_seconds", "target"])
    return 0


def _recipe(args) -> int:
    from pathlib import Path

    from dinomix_core.benchmarking.dhc_recipe import run_dhc_recipe

    out = Path(args.out)
    progress = ConsoleProgress()
    try:
        doc = run_dhc_recipe(
            args.bench_name, args.data, args.split, out, labeled_file=args.labeled_file, method=args.method,
            steps=args.steps, patch=args.patch, width=args.width, depth=args.depth,
            inplane_downsample=args.inplane_downsample, teacher=args.teacher, callbacks=[progress],
            result_json=args.json or out / f"{args.bench_name}.json",
        )
    finally:
        progress.close()
    _print(doc, ["benchmark", "mean_dice", "tail_dice", "published_mean_dice", "teacher"])
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"
