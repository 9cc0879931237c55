"""The project at a glance, as one JSON-ready dict (``dinomix project status --json``).

Case status, exactly one of:
  ``labeled``   has a final human revision (used as labeled data for training)
  ``draft``     has human revisions, none final yet
  ``predicted`` has only model revisions
  ``unlabeled`` has no revision
Every case also reports ``image``: ``ok``, ``changed`` (hash differs) or ``missing``.
"""

from __future__ import annotations

from dinomix_core.project import schema

STATUSES = ("labeled", "draft", "predicted", "unlabeled")


def status_report(project, *, verify: bool = False) -> dict:
    """Counts, per-case status, the latest run and its metrics. ``verify`` re-hashes every
    image and label file instead of trusting unchanged size/mtime."""
    revs: dict[str, dict] = {}
    for row in project.query(
        "SELECT case_id, COUNT(*) AS n, SUM(kind = 'human') AS human, "
        "MAX(CASE WHEN kind = 'human' AND final = 1 THEN id END) AS label_rev, MAX(id) AS current_rev "
        "FROM revisions WHERE deleted_at IS NULL GROUP BY case_id"
    ):
        revs[row["case_id"]] = row
    cases = []
    counts = {s: 0 for s in STATUSES}
    image_problems = 0
    for case in project.cases():
        info = revs.get(case.id)
        if info is None:
            status = "unlabeled"
        elif info["label_rev"] is not None:
            status = "labeled"
        elif info["human"]:
            status = "draft"
        else:
            status = "predicted"
        image = project.image_state(case, verify=verify)
        image_problems += image != "ok"
        counts[status] += 1
        cases.append({
            "id": case.id, "status": status, "image": image, "image_path": str(case.image_path),
            "stored": case.stored, "shape_zyx": list(case.shape_zyx), "spacing_zyx": list(case.spacing_zyx),
            "revisions": 0 if info is None else info["n"],
            "label_revision": None if info is None else info["label_rev"],
            "current_revision": None if info is None else info["current_rev"],
        })
    removed = project.query_one("SELECT COUNT(*) AS n FROM cases WHERE deleted_at IS NOT NULL")["n"]
    label_map = project.label_map
    latest = project.latest_run()
    report = {
        "project": str(project.root),
        "schema_version": schema.SCHEMA_VERSION,
        "classes": None if label_map is None else [
            {"value": v, "name": n, "color": list(c)} for v, (n, c) in enumerate(zip(label_map.names, label_map.colors))],
        "counts": {"cases": len(cases), **counts, "image_problems": image_problems, "removed": removed},
        "cases": cases,
        "latest_run": None if latest is None else _run_dict(project, latest),
        "runs": len(project.runs()),
        "quarantined_files": sum(1 for p in project.quarantine_dir.rglob("*") if p.is_file()),
        "revision_problems": [],
    }
    if verify:
        report["revision_problems"] = [{"revision": r, "case": c, "problem": p} for r, c, p in project.verify_revisions()]
    return report


def _run_dict(project, run) -> dict:
    return {
        "id": run.id, "method": run.method, "teacher": run.teacher, "teacher_hash": run.teacher_hash,
        "status": run.status, "started_at": run.started_at, "finished_at": run.finished_at,
        "metrics": run.metrics, "checkpoint": None if run.checkpoint is None else str(run.checkpoint),
        "predictions": len(project.predictions(run.id)),
    }


def format_status(report: dict) -> str:
    """The report as a few lines of text for the terminal."""
    c = report["counts"]
    lines = [f"project {report['project']}",
             f"cases: {c['cases']} ({c['labeled']} labeled, {c['draft']} draft, {c['predicted']} predicted, "
             f"{c['unlabeled']} unlabeled)" + (f", {c['removed']} removed (purge to delete)" if c["removed"] else "")]
    classes = report["classes"]
    lines.append("classes: " + (", ".join(f"{k['value']} {k['name']}" for k in classes[1:]) if classes else "not set"))
    for case in report["cases"]:
        flag = "" if case["image"] == "ok" else f"  IMAGE {case['image'].upper()}: {case['image_path']}"
        lines.append(f"  {case['id']:<24} {case['status']:<10} revisions {case['revisions']}{flag}")
    run = report["latest_run"]
    if run is None:
        lines.append("latest run: none")
    else:
        lines.append(f"latest run: {run['id']} {run['method']} (teacher {run['teacher']}) {run['status']}, "
                     f"{run['predictions']} prediction(s)")
        for key, value in (run["metrics"] or {}).items():
            lines.append(f"  {key}: {_fmt_metric(value)}")
    if c["image_problems"]:
        lines.append(f"WARNING: {c['image_problems']} image(s) changed or missing; training refuses them until "
                     "you put them back or run `dinomix project relink`.")
    if report["revision_problems"]:
        for p in report["revision_problems"]:
            lines.append(f"WARNING: revision {p['revision']} of {p['case']}: {p['problem']}")
    if report["quarantined_files"]:
        lines.append(f"note: {report['quarantined_files']} file(s) in quarantine/ from interrupted saves (kept for you to check)")
    return "\n".join(lines)


def _fmt_metric(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt_metric(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
