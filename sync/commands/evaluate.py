"""``autolabel eval``, ``autolabel tune`` and ``autolabel select``: how good the first pass
was, which thresholds to use next time, and which samples still need a human."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, out, text

__all__ = ["register"]

DatasetOption = Annotated[str, typer.Option(help="Dataset in the store.")]
PredOption = Annotated[
    list[str] | None,
    typer.Option("--pred", help="Pre-label run (repeat to compare runs; default: the latest pre-label run)."),
]
TruthOption = Annotated[
    str | None, typer.Option(help="Truth run (default: the latest human revision of each sample).")
]
IouOption = Annotated[float, typer.Option(help="IoU at which a pre-label counts as found (precision/recall/F1).")]
VerifyOption = Annotated[float, typer.Option("--seconds-verify", help="Seconds to verify a correct pre-label.")]
AdjustOption = Annotated[float, typer.Option("--seconds-adjust", help="Seconds to move/resize a pre-label.")]
RelabelOption = Annotated[float, typer.Option("--seconds-relabel", help="Seconds to change a pre-label's class.")]
DeleteOption = Annotated[float, typer.Option("--seconds-delete", help="Seconds to delete a false pre-label.")]
DrawOption = Annotated[float, typer.Option("--seconds-draw", help="Seconds to draw a shape from scratch.")]


def _store() -> Any:
    from sync.store import open_store

    with domain_errors():
        return open_store()


def _seconds(verify: float, adjust: float, relabel: float, delete: float, draw: float) -> Any:
    from sync.evaluate.seconds import ActionSeconds

    try:
        return ActionSeconds(verify=verify, adjust=adjust, relabel=relabel, delete=delete, draw=draw)
    except ValueError as error:
        fail(str(error))


def _evaluate(
    dataset: str, preds: list[str] | None, truth: str | None, iou: float, seconds: Any, masks: bool | None
) -> tuple[Any, list[Any]]:
    from sync.evaluate.load import choose_runs, load_eval, wants_masks
    from sync.evaluate.report import evaluate_run

    if not 0.0 < iou < 1.0:
        fail(f"--iou must lie between 0 and 1, got {iou}")
    store = _store()
    with domain_errors():
        selection = choose_runs(store, dataset, preds=preds or (), truth=truth)
        use_masks = wants_masks(store, selection) if masks is None else masks
        datas = load_eval(store, selection, masks=use_masks)
        evaluations = [evaluate_run(d, iou=iou, seconds=seconds, masks=use_masks) for d in datas]
    return selection, evaluations


def _print_notes(selection: Any) -> None:
    """The selection's notes (samples left out, e.g. those a trained model was trained on)."""
    for note in selection.notes:
        err.print(text(f"note: {note}", "yellow"), highlight=False, soft_wrap=True)


def _write_json(path: Path, payload: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")


def evaluate(
    dataset: DatasetOption,
    pred: PredOption = None,
    truth: TruthOption = None,
    iou: IouOption = 0.5,
    masks: Annotated[
        bool | None, typer.Option("--masks/--no-masks", help="Mask metrics too (default: when both sides have masks).")
    ] = None,
    rank_by: Annotated[str, typer.Option(help="Order several runs by map | map50 | f1 | saved.")] = "map",
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    html_file: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report.")] = None,
    seconds_verify: VerifyOption = 7.0,
    seconds_adjust: AdjustOption = 7.0,
    seconds_relabel: RelabelOption = 7.0,
    seconds_delete: DeleteOption = 1.5,
    seconds_draw: DrawOption = 30.0,
) -> None:
    """Measure pre-labels against human corrections (P/R/F1, mAP, edits, time saved, thresholds).

    Several --pred runs are ranked side by side on the same samples and truth."""
    from sync.evaluate.report import RANK_BY, build_report
    from sync.evaluate.table import print_report

    if rank_by not in RANK_BY:
        fail(f"--rank-by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    seconds = _seconds(seconds_verify, seconds_adjust, seconds_relabel, seconds_delete, seconds_draw)
    _, evaluations = _evaluate(dataset, pred, truth, iou, seconds, masks)
    with domain_errors():
        report = build_report(dataset, evaluations, rank_by=rank_by, seconds=seconds)
    print_report(report, out)
    if json_file is not None:
        _write_json(json_file, report)
        err.print(text(f"JSON report: {json_file}"))
    if html_file is not None:
        from sync.evaluate.html import write_html

        try:
            write_html(report, html_file)
        except OSError as error:
            fail(f"cannot write {html_file}: {error.strerror or error}")
        err.print(text(f"HTML report: {html_file}"))


def tune(
    dataset: DatasetOption,
    pred: Annotated[str | None, typer.Option(help="Pre-label run (default: the latest).")] = None,
    truth: TruthOption = None,
    iou: IouOption = 0.5,
    by: Annotated[str, typer.Option(help="f1 (best F1 per class) | time (least annotator time per class).")] = "f1",
    write: Annotated[
        Path | None, typer.Option("--write", help="Ontology YAML to write the chosen thresholds into.")
    ] = None,
    seconds_verify: VerifyOption = 7.0,
    seconds_delete: DeleteOption = 1.5,
    seconds_draw: DrawOption = 30.0,
) -> None:
    """Choose a score threshold per class from the human corrections.

    Tags (image-level labels) are tuned by best F1 whatever --by says. --write puts the
    thresholds into the ontology file (comments and layout kept) for the next pre-label run
    and the next `autolabel functions render`."""
    from sync.evaluate.table import fmt_threshold

    if by not in ("f1", "time"):
        fail(f"--by must be f1 or time, got {by!r}")
    seconds = _seconds(seconds_verify, seconds_verify, seconds_verify, seconds_delete, seconds_draw)
    selection, (evaluation,) = _evaluate(dataset, [pred] if pred else None, truth, iou, seconds, False)
    _print_notes(selection)
    if not evaluation.data.pred_has_scores:
        fail(f"run {evaluation.name!r} has no scores (imported without them): there is no threshold to tune")
    currents, where, inherited = _current_thresholds(evaluation, write)
    chosen = _tune_table(evaluation, by, currents, where)
    if write is None:
        err.print("dry run: add --write ONTOLOGY.yaml to save these thresholds")
        return
    if not chosen:
        fail("no class has a threshold to tune (no class has both pre-labels and truth)")
    changed = {label: value for label, value in chosen.items() if value != currents.get(label)}
    if not changed:
        out.print(text(f"nothing to change in {write}: every threshold there is already as good as the best"))
        return
    from sync.evaluate.tune import write_thresholds

    with domain_errors():
        try:
            write_thresholds(write, changed, decimals=9)  # already the shortest decimals
        except OSError as error:
            fail(f"cannot write {write}: {error.strerror or error}")
    for label, new in changed.items():
        old = fmt_threshold(currents.get(label)) + (" (the default)" if label in inherited else "")
        out.print(text(f"{label}: {old} → {fmt_threshold(new)}"))
    out.print(text(f"wrote {len(changed)} thresholds to {write}"))


def _current_thresholds(evaluation: Any, write: Path | None) -> tuple[dict[str, float], str, set[str]]:
    """Each label's threshold now, where it comes from (the ontology file ``--write`` names,
    else the threshold the run was made with) and the labels that inherit the file's default."""
    if write is not None:
        from serverless.ontology import load_ontology

        with domain_errors():
            ontology = load_ontology(write)
        currents = {label.name: ontology.threshold_for(i) for i, label in enumerate(ontology.labels)}
        return currents, f"in {write.name}", {label.name for label in ontology.labels if label.threshold is None}
    sweeps = {**evaluation.sweeps, **evaluation.tag_sweeps}
    currents = {label: s.current for label, s in sweeps.items() if s.current is not None}
    return currents, "of the run", set()


def _tune_table(evaluation: Any, by: str, currents: dict[str, float], where: str) -> dict[str, float]:
    """Print the tuning tables (shapes by ``by``; tags, if any, by best F1); return the
    threshold chosen per label (the current one where it is as good as the best: no
    evidence, no change)."""
    chosen: dict[str, float] = {}
    if evaluation.sweeps or not evaluation.tag_sweeps:
        title = f"Thresholds for {evaluation.name} ({'best F1' if by == 'f1' else 'least annotator time'})"
        chosen.update(_tune_rows(title, evaluation.sweeps, by, currents, where, seconds=True))
    if evaluation.tag_sweeps:
        title = f"Tag thresholds for {evaluation.name} (best F1)"
        chosen.update(_tune_rows(title, evaluation.tag_sweeps, "f1", currents, where, seconds=False))
        if by != "f1":
            out.print(text("tags are tuned by best F1: there is no annotator-time estimate for tags"))
    return chosen


def _tune_rows(
    title: str, sweeps: Any, by: str, currents: dict[str, float], where: str, *, seconds: bool
) -> dict[str, float]:
    """Print one tuning table over ``sweeps`` (``{label: ClassSweep}``); the chosen thresholds."""
    from rich.table import Table

    from sync.evaluate.table import fmt_metric, fmt_threshold

    table = Table(title=text(title))
    columns = ("label", f"current ({where})", "chosen", "precision", "recall", "F1", "est. seconds")
    for column in columns if seconds else columns[:-1]:
        table.add_column(text(column), justify="left" if column == "label" else "right")
    chosen: dict[str, float] = {}
    for label, sweep in sweeps.items():
        choice = sweep.best_f1 if by == "f1" else sweep.min_time
        current = currents.get(label)
        if choice is None:
            table.add_row(text(label), fmt_threshold(current), "unchanged", "-", "-", *["-"] * (2 if seconds else 1))
            continue
        keep = current is not None and sweep.keeps(current, by)
        chosen[label] = float(current) if keep else choice.threshold
        table.add_row(
            text(label), fmt_threshold(current), "unchanged" if keep else fmt_threshold(chosen[label]),
            fmt_metric(choice.precision), fmt_metric(choice.recall), fmt_metric(choice.f1),
            *((f"{choice.seconds:.0f}",) if seconds else ()),
        )
    out.print(table)
    return chosen


def _by_embeddings(
    store: Any, dataset: str, by: str, model: str | None, pred: str | None, truth: str | None
) -> tuple[list[int], list[str], Any, dict[int, dict[str, Any]], str | None, str | None]:
    """``(sample ids, uris, values, extra JSON per sample, run, truth)`` of ``select --by
    mistakenness | uniqueness`` from the stored embeddings (`sync.qa.scores`)."""
    from sync.commands.qa import latest_prelabel, qa_errors
    from sync.qa import scores

    extras: dict[int, dict[str, Any]] = {}
    with qa_errors():
        run_name = store.get_run(dataset, pred).name if pred else latest_prelabel(store, dataset)
        if by == "uniqueness":
            ids, values = scores.sample_uniqueness(store, dataset, model=model)
            truth_name = None
        else:
            found = scores.annotation_mistakes(store, dataset, model=model, run=truth)
            ids, values = found.sample_scores()
            truth_name = found.source
            extras = {sid: {key: part[key] for key in ("annotations", "missed") if key in part}
                      for sid, part in found.sample_json().items()}
        uri_of = {s.id: s.uri for s in store.samples(dataset, ids=ids)}
    return ids, [uri_of[i] for i in ids], values, extras, run_name, truth_name


def select(
    dataset: DatasetOption,
    budget: Annotated[str, typer.Option(help="How many samples: a share (10%) or a count (25).")] = "10%",
    by: Annotated[str, typer.Option(help="f1 (worst first) | confidence (least sure first) | edits (most first) | mistakenness | uniqueness (highest first; autolabel embed first).")] = "f1",
    pred: Annotated[str | None, typer.Option(help="Pre-label run (default: the latest).")] = None,
    truth: TruthOption = None,
    iou: IouOption = 0.5,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the picks as JSON (for `autolabel cvat push --samples`).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="mistakenness/uniqueness: the clip[:WEIGHTS] model of the embeddings (default clip).")
    ] = None,
) -> None:
    """Pick the hardest samples for a human review pass (worst F1, least confident, most edits,
    most likely mislabelled, least like the rest).

    --by confidence and uniqueness need no human revision: they also rank samples nobody has
    checked. --by mistakenness scores the --truth run's annotations (default: the latest human
    revision per sample) by their k-NN label disagreement (as autolabel qa mistakes)."""
    from rich.table import Table

    from sync.evaluate import hard_samples as hs

    if by not in hs.BY:
        fail(f"--by must be one of {', '.join(hs.BY)}, got {by!r}")
    store = _store()
    extras: dict[int, dict[str, Any]] = {}
    if by in ("mistakenness", "uniqueness"):
        ids, uris, values, extras, run_name, truth_name = _by_embeddings(store, dataset, by, model, pred, truth)
        ascending = False
    elif by == "confidence":
        from sync.evaluate.load import default_pred

        with domain_errors():
            run = store.get_run(dataset, pred) if pred else default_pred(store, dataset)
            parts = store.annotations_of(run)
            samples = store.samples(dataset, ids=list(parts))
        if not parts:
            fail(f"run {run.name!r} covers no samples")
        ids = [s.id for s in samples]
        uris = [s.uri for s in samples]
        values = hs.sample_confidence([parts[i].scores for i in ids])
        ascending, run_name, truth_name = True, run.name, None
    else:
        from sync.evaluate.seconds import ActionSeconds

        selection, (evaluation,) = _evaluate(dataset, [pred] if pred else None, truth, iou, ActionSeconds(), False)
        _print_notes(selection)
        data = evaluation.data
        ids, uris = [int(i) for i in data.sample_ids], list(data.uris)
        if by == "f1":
            values, ascending = hs.sample_f1(*evaluation.per_sample_counts()), True
        elif evaluation.edits is None:
            fail(f"run {evaluation.name!r} has only tags: --by edits counts shape edits; use --by f1")
        else:
            values, ascending = hs.sample_edits(evaluation.edits.per_sample), False
        run_name, truth_name = evaluation.name, data.truth_name
    with domain_errors():
        count = hs.parse_budget(budget, len(ids))
    picks = hs.pick_hardest(ids, uris, values, count, ascending=ascending)
    table = Table(title=text(f"{len(picks)} of {len(ids)} samples by {by} (run {run_name})"))
    table.add_column("sample", justify="right")
    table.add_column(by, justify="right")
    table.add_column("uri")
    for pick in picks:
        table.add_row(str(pick.sample_id), f"{pick.value:.3f}" if by != "edits" else str(int(pick.value)), text(pick.uri))
    out.print(table)
    if out_file is not None:
        from sync.commands.qa import owning_runs, write_selection

        payload = {
            "dataset": dataset, "run": run_name, "truth": truth_name, "by": by, "budget": budget,
            "samples": [{"sample_id": p.sample_id, "uri": p.uri, by: p.value} | extras.get(p.sample_id, {})
                        for p in picks],
        }  # a mistakenness selection holds annotations: it is pushed with the run(s) they belong to
        runs = owning_runs(store, dataset, truth, [p.sample_id for p in picks]) if by == "mistakenness" else ()
        write_selection(out_file, payload, runs)


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``tune`` and ``select`` to the ``autolabel`` app."""
    app.command("eval")(evaluate)
    app.command("tune")(tune)
    app.command("select")(select)
