"""`dinomix project ...`: create and manage an annotation project from the terminal.

A thin layer over :class:`dinomix_core.project.Project`; every check and every write lives
there, so the CLI, the napari plugin and the app behave the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dinomix_core.io import LabelMap
from dinomix_core.io.errors import DinomixInputError


def _label_map(spec: str) -> LabelMap:
    """``btcv13``/``amos15`` (shipped presets) or a dataset.json file / nnU-Net folder."""
    if spec.lower().replace("-", "").replace("_", "") in ("btcv13", "amos15"):
        return LabelMap.preset(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DinomixInputError(path, "is neither a preset nor an existing dataset.json.",
                                "Use --labels btcv13, --labels amos15, or the path of a dataset.json.")
    return LabelMap.from_dataset_json(path)


def _open(args, *, readonly: bool = False):
    """Open the project; commands that only look (status, listings, export) open it read-only,
    so they never create, migrate or tidy anything."""
    from dinomix_core.project import Project

    return Project.open(args.dir, readonly=readonly)


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_init(args) -> int:
    from dinomix_core.io.outputs import check_output_dir
    from dinomix_core.project import Project

    check_output_dir(args.dir, option="DIR")
    label_map = _label_map(args.labels) if args.labels else None
    with Project.init(args.dir, label_map=label_map) as project:
        classes = f"{label_map.num_classes - 1} classes ({label_map.title or args.labels})" if label_map else "no class map yet"
        print(f"created project {project.root} with {classes}")
        if label_map is None:
            print(f"  set classes before importing labels: dinomix project classes {project.root} --labels btcv13")
    return 0


def cmd_classes(args) -> int:
    with _open(args, readonly=not args.labels) as project:
        if args.labels:
            project.set_label_map(_label_map(args.labels))
        label_map = project.label_map
        if args.json:
            _print_json(None if label_map is None else
                        [{"value": v, "name": n, "color": list(c)} for v, (n, c) in enumerate(zip(label_map.names, label_map.colors))])
        elif label_map is None:
            print("no class map set (use --labels btcv13|amos15|dataset.json)")
        else:
            for value, name in enumerate(label_map.names):
                print(f"{value:>3} {name}")
    return 0


def cmd_add(args) -> int:
    """Exit 0 when everything asked for is in the project (added, or already there as a duplicate;
    label-like files left out of a scanned folder are expected); 2 when anything could not be added."""
    with _open(args) as project:
        report = project.add_images(args.paths, copy=args.copy)
    failed = [(p, r) for p, r in report.skipped if p not in report.existing and not r.startswith("looks like a label")]
    if args.json:
        _print_json({"added": [{"id": c, "path": str(p), **({"series": report.series[c]} if c in report.series else {})}
                               for c, p in report.added],
                     "skipped": [{"path": str(p), "reason": r} for p, r in report.skipped],
                     "failed": len(failed)})
    else:
        for case_id, path in report.added:
            print(f"added    {case_id:<24} {report.series.get(case_id, path)}")
        for path, reason in report.skipped:
            print(f"skipped  {path}: {reason}")
        print(f"{len(report.added)} added, {len(report.skipped)} skipped"
              + (f" ({len(failed)} could not be added)" if failed else ""))
    if failed:
        print(f"error: {len(failed)} of the paths given could not be added (see the skipped lines); "
              "fix or remove them and run the add again (cases already added are kept).", file=sys.stderr)
        return 2
    return 0


def cmd_status(args) -> int:
    from dinomix_core.project.summary import format_status

    with _open(args, readonly=True) as project:
        report = project.status(verify=args.verify)
    if args.json:
        _print_json(report)
    else:
        print(format_status(report))
    return 0


def cmd_label(args) -> int:
    with _open(args) as project:
        rev = project.save_labels(args.case, args.labelfile, author=args.author, final=args.final,
                                  note=args.note or f"imported from {Path(args.labelfile).resolve()}")
    print(f"saved revision {rev.id} of {rev.case_id} ({'final' if rev.final else 'draft'}, {rev.kind}, by {rev.author})")
    return 0


def cmd_revisions(args) -> int:
    with _open(args, readonly=True) as project:
        revisions = project.revisions(args.case, include_removed=args.all)
        label = project.label_revision(args.case)
    if args.json:
        _print_json([{**rev.__dict__, "path": str(rev.path)} for rev in revisions])
        return 0
    if not revisions:
        print(f"{args.case}: no revisions")
    for rev in revisions:
        flags = ", ".join(f for f in ("final" if rev.final else "draft" if rev.kind == "human" else "",
                                       "REMOVED" if rev.removed else "",
                                       "training label" if label and rev.id == label.id else "") if f)
        origin = f" run {rev.run_id}" if rev.run_id else ""
        print(f"{rev.id:>5}  {rev.kind:<5} {rev.created_at[:19]}  {rev.author}{origin}  [{flags}]"
              + (f"  {rev.note}" if rev.note else ""))
    return 0


def cmd_restore(args) -> int:
    with _open(args) as project:
        rev = project.restore_revision(args.case, args.revision, author=args.author)
    print(f"revision {args.revision} restored as new revision {rev.id} of {rev.case_id}")
    return 0


def cmd_remove(args) -> int:
    with _open(args) as project:
        if args.revision is not None:
            project.revision(args.revision, case_id=args.case)
            (project.undo_remove_revision if args.undo else project.remove_revision)(args.revision)
            what = f"revision {args.revision} of {args.case}"
        else:
            (project.restore_case if args.undo else project.remove_case)(args.case)
            what = f"case {args.case}"
    if args.undo:
        print(f"{what} is back")
    else:
        print(f"removed {what} (kept on disk; undo with --undo, delete for good with `dinomix project purge`)")
    return 0


def cmd_purge(args) -> int:
    with _open(args) as project:
        report = project.purge(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(report.cases)} case(s), {len(report.revisions)} revision(s), {len(report.deleted)} file(s)")
    for path in report.deleted:
        print(f"  {path}")
    for path in report.kept_outside:
        print(f"  kept (outside the project, not ours to delete): {path}")
    return 0


def cmd_relink(args) -> int:
    with _open(args) as project:
        case = project.relink_case(args.case, args.path)
    print(f"{case.id} now points to {case.image_path} (hash {case.content_hash[:12]})")
    return 0


def cmd_export(args) -> int:
    from dinomix_core.io.outputs import check_output_dir
    from dinomix_core.project.export import export_nnunet, export_slicer

    check_output_dir(args.out, option="OUT")
    with _open(args, readonly=True) as project:
        if args.format == "nnunet":
            report = export_nnunet(project, args.out, overwrite=args.overwrite)
        else:
            report = export_slicer(project, args.out, images=args.images, overwrite=args.overwrite)
    print(f"exported {len(report.cases)} labeled case(s) as {args.format} to {report.out}")
    return 0


def cmd_import_nnunet(args) -> int:
    from dinomix_core.project.nnunet_import import import_nnunet

    with _open(args) as project:
        report = import_nnunet(project, args.nnunet_dir, copy=args.copy, author=args.author)
    for case_id in report.added:
        print(f"added    {case_id}")
    for case_id, rev in report.labeled:
        print(f"labeled  {case_id} (revision {rev})")
    for path, reason in report.skipped:
        print(f"skipped  {path}: {reason}")
    print(f"{len(report.added)} case(s) added, {len(report.labeled)} label(s) imported, {len(report.skipped)} skipped")
    # Exit codes say whether everything asked for was done: an identical label already there is.
    failed = [p for p, reason in report.skipped if not reason.startswith("identical to revision")]
    if failed:
        print(f"error: {len(failed)} file(s) of {args.nnunet_dir} could not be imported (see the skipped lines); "
              "fix or remove them and import again (what was imported is kept).", file=sys.stderr)
        return 2
    return 0


def cmd_next(args) -> int:
    with _open(args, readonly=True) as project:
        ranked = project.next_cases(args.n, seed=args.seed)
    if args.json:
        _print_json(ranked)
        return 0
    if not ranked:
        print("nothing to annotate: every case is labeled")
    for item in ranked:
        print(f"{item['rank']:>3}. {item['id']:<24} {item['status']:<10} {item['reason']}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("project", help="annotation project: cases, label revisions, runs",
                                   description="Manage an annotation project folder (SQLite store + label revisions).")
    sub = parser.add_subparsers(dest="project_command", metavar="ACTION", required=True)

    def action(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("dir", metavar="DIR", help="project folder")
        p.set_defaults(func=func)
        return p

    labels_help = "class map: btcv13, amos15, or a dataset.json (file or nnU-Net folder)"
    p = action("init", cmd_init, "create a project folder")
    p.add_argument("--labels", help=labels_help)
    p = action("classes", cmd_classes, "show the class map, or set it with --labels")
    p.add_argument("--labels", help=labels_help)
    p.add_argument("--json", action="store_true")
    p = action("add", cmd_add, "add image files, DICOM folders, or folders to scan; duplicates are skipped")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--copy", action="store_true", help="copy images into the project instead of referencing them")
    p.add_argument("--json", action="store_true")
    p = action("status", cmd_status, "cases, labeled/unlabeled/predicted counts, latest run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--verify", action="store_true", help="re-hash every image and label file")
    p = action("label", cmd_label, "import a label file as a human revision of a case")
    p.add_argument("case", metavar="CASE")
    p.add_argument("labelfile", metavar="LABELFILE")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--final", dest="final", action="store_true", default=True, help="mark it final (default)")
    group.add_argument("--draft", dest="final", action="store_false", help="keep it as a draft")
    p.add_argument("--author", help="default: $DINOMIX_AUTHOR or your login name")
    p.add_argument("--note")
    p = action("revisions", cmd_revisions, "list a case's label revisions")
    p.add_argument("case", metavar="CASE")
    p.add_argument("--all", action="store_true", help="include removed revisions")
    p.add_argument("--json", action="store_true")
    p = action("restore", cmd_restore, "make an earlier revision current again (saved as a new revision)")
    p.add_argument("case", metavar="CASE")
    p.add_argument("revision", metavar="REV", type=int)
    p.add_argument("--author")
    p = action("remove", cmd_remove, "remove a case (or one revision); recoverable until purge")
    p.add_argument("case", metavar="CASE")
    p.add_argument("--revision", type=int, metavar="REV", help="remove only this revision")
    p.add_argument("--undo", action="store_true", help="bring a removed case or revision back")
    p = action("purge", cmd_purge, "delete removed cases and revisions for good")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p = action("relink", cmd_relink, "accept a moved or changed image for a case")
    p.add_argument("case", metavar="CASE")
    p.add_argument("path", metavar="PATH", nargs="?", help="the image's new location (default: same path)")
    p = action("export", cmd_export, "export the final human labels (nnU-Net data set or Slicer .seg.nrrd)")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--format", choices=("nnunet", "slicer"), required=True)
    p.add_argument("--images", action="store_true", help="slicer: also write each image as <case>.nrrd")
    p.add_argument("--overwrite", action="store_true")
    p = action("import-nnunet", cmd_import_nnunet, "add an nnU-Net data set: imagesTr as cases, labelsTr as final labels")
    p.add_argument("nnunet_dir", metavar="NNUNET_DIR")
    p.add_argument("--copy", action="store_true", help="copy images into the project")
    p.add_argument("--author")
    p = action("next", cmd_next, "which unlabeled cases to annotate next (most uncertain first)")
    p.add_argument("--n", type=int, default=5, metavar="K")
    p.add_argument("--seed", type=int, help="seed of the random order before any run (default: the project's)")
    p.add_argument("--json", action="store_true")
