"""``autolabel cvat …``: push pre-labels to CVAT, pull corrections, show status."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from sync.console import domain_errors, err, fail, literal, out, text

if TYPE_CHECKING:
    from datetime import datetime

    from rich.table import Table

    from cvat_bridge.client import CvatSession
    from cvat_bridge.jobs import JobInfo
    from sync.store import CvatTaskInfo, DatasetInfo, Store

app = typer.Typer(help="Work with a CVAT server (CVAT_URL, CVAT_ACCESS_TOKEN or CVAT_USERNAME/CVAT_PASSWORD).",
                  no_args_is_help=True)

UrlOption = Annotated[str | None, typer.Option("--url", help="CVAT server \\[env CVAT_URL].")]
OrgOption = Annotated[str | None, typer.Option("--org", help="Organization slug \\[env CVAT_ORG].")]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="Do not verify the server's TLS certificate \\[env CVAT_INSECURE=1].")
]
CaCertOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert",
        help="CA certificates (PEM file) to trust for the server's TLS certificate, e.g. a private CA "
        "\\[env CVAT_CA_CERT, else REQUESTS_CA_BUNDLE, else SSL_CERT_FILE].",
    ),
]


def _connect(url: str | None, org: str | None, insecure: bool, ca_cert: Path | None = None) -> CvatSession:
    from cvat_bridge.client import CvatSettings, connect

    overrides: dict[str, Any] = {"url": url, "organization": org}
    if insecure:
        overrides["verify_tls"] = False
    if ca_cert is not None:
        overrides.update(ca_cert=str(ca_cert), ca_cert_source="--ca-cert")
    with domain_errors():
        settings = CvatSettings.from_env(**overrides)
        if not settings.verify_tls:
            err.print(f"[yellow]warning:[/] TLS verification is off for {literal(settings.server)}")
        return connect(settings)


def _store() -> Store:
    from sync.store import open_store

    with domain_errors():
        return open_store()


def _parse_assignees(assignees: str | None, assign_map: Path | None) -> Any:
    if assignees and assign_map:
        fail("give --assignees or --assign-map, not both")
    if assign_map:
        import json

        try:
            raw = json.loads(assign_map.read_text(encoding="utf-8"))
            return {int(job): str(user) for job, user in raw.items()}
        except (OSError, ValueError, AttributeError) as error:
            fail(f"{assign_map}: expected a JSON object of job id → username ({error})")
    return [a.strip() for a in (assignees or "").split(",") if a.strip()]


def _read_selection(path: Path, dataset: str) -> list[int]:
    """Sample ids from a selection file (``autolabel select --out``) of this dataset."""
    return _read_selection_file(path, dataset)[0]


def _whole(value: Any, what: str) -> int:
    """``value`` if it is a whole number (not a bool), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return value


def _read_selection_file(path: Path, dataset: str) -> tuple[list[int], dict[int, str]]:
    """Sample ids from a selection file (``autolabel select --out``) of this dataset, and the
    reason it gives for each annotation it scored (``qa mistakes --out``, ``select --by
    mistakenness``: ``samples[].annotations[]`` ``{annotation_id, reason}``, ``""`` for an
    annotation no signal suspects; none in other selections)."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("dataset") != dataset:
            fail(f"{path}: the selection is of dataset {raw.get('dataset')!r}, not {dataset!r}")
        ids = [_whole(item["sample_id"], "sample_id") for item in raw["samples"]]
        reasons: dict[int, str] = {}
        for item in raw["samples"]:
            for annotation in item.get("annotations") or ():
                reason = annotation["reason"]
                if not isinstance(reason, str):
                    raise ValueError(f"reason must be a string, got {reason!r}")
                reasons[_whole(annotation["annotation_id"], "annotation_id")] = reason
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror or error}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        fail(f"{path}: not a selection file of `autolabel select --out` ({type(error).__name__}: {error})")
    if not ids:
        fail(f"{path}: the selection holds no samples")
    return ids, reasons


@app.command()
def push(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    run: Annotated[
        str,
        typer.Option(help="Pre-label (or import) run to push; for the suspects of `qa mistakes --out`, the run "
                     "holding them (e.g. a human revision)."),
    ],
    task_name: Annotated[str, typer.Option(help="Name of the CVAT task (created, or completed if it exists).")],
    project: Annotated[int | None, typer.Option(help="CVAT project id (its labels are used).")] = None,
    ontology: Annotated[Path | None, typer.Option(help="Ontology for the task's labels (default: the run's).")] = None,
    segment_size: Annotated[int | None, typer.Option(help="Frames per job.")] = None,
    assignees: Annotated[str | None, typer.Option(help="Usernames, assigned round-robin: a,b,c.")] = None,
    assign_map: Annotated[Path | None, typer.Option(help="JSON {job id: username}.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite jobs a human has already changed.")] = False,
    samples: Annotated[
        Path | None,
        typer.Option(help="Push only these samples: the JSON of `autolabel select --out` (suspects of `qa mistakes` "
                     "go with their reason in each shape's qa_reason attribute)."),
    ] = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Create a CVAT task from a run's images and upload its pre-labels.

    Rerunning it adds nothing; jobs a human has changed are left alone (exit code 1) unless
    --force. A selection of suspects (`autolabel qa mistakes --out`) makes a review task: the
    run's shapes of the samples holding its suspects, each suspect with its reason.
    """
    from serverless.ontology import load_ontology
    from sync.push import push_run

    if project is not None and ontology is not None:
        fail("give --project or --ontology, not both")
    if segment_size is not None and segment_size < 1:
        fail(f"--segment-size must be at least 1, got {segment_size}")
    plan = _parse_assignees(assignees, assign_map)
    sample_ids, reasons = _read_selection_file(samples, dataset) if samples is not None else (None, {})
    with domain_errors():
        onto = load_ontology(ontology) if ontology else None
    store = _store()
    session = _connect(url, org, insecure, ca_cert)
    with domain_errors():
        result = push_run(
            store, session, dataset=dataset, run_name=run, task_name=task_name, ontology=onto, project_id=project,
            segment_size=segment_size, assignees=plan, force=force, report=lambda m: err.print(m, markup=False, highlight=False),
            sample_ids=sample_ids, reasons=reasons,
        )
    if result.left_out:
        runs = ", ".join(repr(r) for r in result.other_runs) or "another run"
        err.print(f"warning: {len(result.left_out)} samples of {samples} left out: their scored annotations are of "
                  f"{runs} (push them with --run and another --task-name)", markup=False, highlight=False)
    out.print(
        f"task {result.task_id}: {len(result.jobs)} jobs, {result.shapes} pre-labels"
        + (f" and {result.tags} tags" if result.tags else "")
        + (f", {result.reasons} with a review reason" if result.reasons else "") + " "
        f"({result.annotation_requests} annotation requests)"
        + (f"; skipped human-edited jobs {list(result.skipped_jobs)}" if result.skipped_jobs else "")
        + (f"; overwrote human-edited jobs {list(result.forced_jobs)}" if result.forced_jobs else "")
    )
    for job_id, user in sorted(result.assignments.items()):
        out.print(f"  job {job_id} → {user}")
    if result.skipped_jobs:
        raise typer.Exit(1)


@app.command()
def pull(
    task: Annotated[int | None, typer.Option(help="CVAT task id.")] = None,
    project: Annotated[int | None, typer.Option(help="CVAT project id.")] = None,
    stage: Annotated[
        str | None, typer.Option(help="Only jobs in this stage (annotation|validation|acceptance).")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="Only jobs in this state (new|in progress|completed|rejected).")
    ] = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Fetch changed jobs into new human revisions (one transaction per job)."""
    from sync.pull import pull_jobs

    if (task is None) == (project is None):
        fail("give exactly one of --task ID or --project ID")
    store = _store()
    session = _connect(url, org, insecure, ca_cert)
    try:
        with domain_errors():
            result = pull_jobs(store, session, task_id=task, project_id=project, stage=stage, state=state,
                               report=lambda m: err.print(m, markup=False, highlight=False))
    except ValueError as error:
        fail(str(error))
    tags = f", {result.tags} tags" if result.tags else ""
    out.print(f"pulled {len(result.pulled)} jobs ({result.shapes} shapes{tags}), {len(result.unchanged)} unchanged")


@app.command()
def status(
    dataset: Annotated[str | None, typer.Option(help="Only tasks of this dataset.")] = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Per task and job: stage, state, assignee, last pull, pre-labels pushed vs shapes now.

    Exits 1 when a task recorded in the store no longer exists on the server.
    """
    from cvat_bridge.jobs import list_jobs
    from cvat_bridge.tasks import get_task
    from sync.pull import task_gone

    store = _store()
    session = _connect(url, org, insecure, ca_cert)
    server = session.server
    gone: list[str] = []
    shown = 0
    with domain_errors():
        datasets = [store.get_dataset(dataset)] if dataset else store.list_datasets()
        out.print(text(f"CVAT tasks on {server}", style="bold"))
        for ds in datasets:
            for link in store.cvat_tasks(ds):
                if link.server != server:
                    continue
                jobs = list_jobs(session, task_id=link.task_id)
                if not jobs and get_task(session, link.task_id) is None:
                    gone.append(task_gone(store, link))
                    continue
                out.print(_task_heading(store, ds, link))
                out.print(_jobs_table(session, store, link, jobs))
                shown += 1
    if not shown and not gone:
        out.print(text(f"no task of {'dataset ' + repr(dataset) if dataset else 'this store'} is on {server}"))
    for message in gone:
        err.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)
    if gone:
        raise typer.Exit(1)


def _task_heading(store: Store, ds: DatasetInfo, link: CvatTaskInfo) -> Text:
    """``task 42 'name' · dataset 'd' · run 'r'``, printed literally (names may hold brackets)."""
    run = store.run_by_id(link.run_id).name if link.run_id is not None else None
    parts = [f"task {link.task_id}" + (f" {link.name!r}" if link.name else ""), f"dataset {ds.name!r}"]
    if run is not None:
        parts.append(f"run {run!r}")
    return Text.assemble("\n", (parts[0], "bold"), *(f" · {part}" for part in parts[1:]))


def _jobs_table(session: CvatSession, store: Store, link: CvatTaskInfo, jobs: list[JobInfo]) -> Table:
    """One row per job, narrow enough for 80 columns: ids, frames and numbers never wrap."""
    from rich.table import Table

    from cvat_bridge.annotations import job_annotations

    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold", show_edge=False)
    for name, justify in (("job", "right"), ("frames", "left"), ("stage", "left"), ("state", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    table.add_column("assignee", overflow="ellipsis")  # the only column that gives way
    table.add_column("last pulled", no_wrap=True)
    table.add_column("pushed", justify="right", no_wrap=True)
    table.add_column("now (kept)", justify="right", no_wrap=True)
    known_jobs = {j.job_id: j for j in store.jobs_of(link)}
    pushed = store.pushed_shapes(link)
    frames, prelabels = _prelabels_of(store, link)
    for job in jobs:
        now_ids = {int(s["id"]) for s in job_annotations(session, job.id)["shapes"]}
        known = known_jobs.get(job.id)
        pulled = _when(known.last_pulled_at) if known and known.last_pulled_at else "never"
        table.add_row(
            str(job.id), f"{job.start_frame}-{job.stop_frame}", job.stage, job.state, text(job.assignee or "-"),
            pulled, str(_prelabels_in_job(job, frames, prelabels)), f"{len(now_ids)} ({len(now_ids & pushed.keys())})",
        )
    return table


def _when(moment: datetime) -> str:
    """A time as ``ls -l`` shows it: ``Nov 02 14:05`` within half a year, else ``Nov 02  2025``."""
    from datetime import UTC, datetime, timedelta

    local = moment.astimezone() if moment.tzinfo else moment.replace(tzinfo=UTC).astimezone()
    recent = abs(datetime.now(local.tzinfo) - local) < timedelta(days=182)
    return local.strftime("%b %d %H:%M" if recent else "%b %d  %Y")


def _prelabels_of(store: Store, link: CvatTaskInfo) -> tuple[dict[int, int], dict[int, int]]:
    """The task's ``{frame: sample id}`` and ``{sample id: pre-labels of its run}``, read once
    for all its jobs (no pre-labels when the task has no run)."""
    frames = store.frames_of(link)
    if not link.run_id:
        return frames, {}
    run = store.run_by_id(link.run_id)
    return frames, {sid: len(d) for sid, d in store.annotations_of(run, sample_ids=sorted(set(frames.values()))).items()}


def _prelabels_in_job(job: JobInfo, frames: dict[int, int], prelabels: dict[int, int]) -> int:
    """The pre-labels on the job's frames (`_prelabels_of`)."""
    samples = {frames[f] for f in range(job.start_frame, job.stop_frame + 1) if f in frames}
    return sum(prelabels.get(sample_id, 0) for sample_id in samples)
