"""``autolabel cvat …``: push pre-labels to CVAT, pull corrections, show status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, out

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


def _connect(url: str | None, org: str | None, insecure: bool, ca_cert: Path | None = None) -> Any:
    from cvat_bridge.client import CvatSettings, connect

    overrides: dict[str, Any] = {"url": url, "organization": org}
    if insecure:
        overrides["verify_tls"] = False
    if ca_cert is not None:
        overrides.update(ca_cert=str(ca_cert), ca_cert_source="--ca-cert")
    with domain_errors():
        settings = CvatSettings.from_env(**overrides)
        if not settings.verify_tls:
            err.print(f"[yellow]warning:[/] TLS verification is off for {settings.server}")
        return connect(settings)


def _store() -> Any:
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
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("dataset") != dataset:
            fail(f"{path}: the selection is of dataset {raw.get('dataset')!r}, not {dataset!r}")
        ids = [item["sample_id"] for item in raw["samples"]]
        for sample_id in ids:
            if isinstance(sample_id, bool) or not isinstance(sample_id, int):
                raise ValueError(f"sample_id must be a whole number, got {sample_id!r}")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror or error}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        fail(f"{path}: not a selection file of `autolabel select --out` ({type(error).__name__}: {error})")
    if not ids:
        fail(f"{path}: the selection holds no samples")
    return ids


@app.command()
def push(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    run: Annotated[str, typer.Option(help="Pre-label run to push.")],
    task_name: Annotated[str, typer.Option(help="Name of the CVAT task (created, or completed if it exists).")],
    project: Annotated[int | None, typer.Option(help="CVAT project id (its labels are used).")] = None,
    ontology: Annotated[Path | None, typer.Option(help="Ontology for the task's labels (default: the run's).")] = None,
    segment_size: Annotated[int | None, typer.Option(help="Frames per job.")] = None,
    assignees: Annotated[str | None, typer.Option(help="Usernames, assigned round-robin: a,b,c.")] = None,
    assign_map: Annotated[Path | None, typer.Option(help="JSON {job id: username}.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite jobs a human has already changed.")] = False,
    samples: Annotated[
        Path | None, typer.Option(help="Push only these samples: the JSON of `autolabel select --out`.")
    ] = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Create a CVAT task from a run's images and upload its pre-labels.

    Rerunning it adds nothing; jobs a human has changed are left alone (exit code 1) unless
    --force.
    """
    from serverless.ontology import load_ontology
    from sync.push import push_run

    if project is not None and ontology is not None:
        fail("give --project or --ontology, not both")
    if segment_size is not None and segment_size < 1:
        fail(f"--segment-size must be at least 1, got {segment_size}")
    plan = _parse_assignees(assignees, assign_map)
    sample_ids = _read_selection(samples, dataset) if samples is not None else None
    with domain_errors():
        onto = load_ontology(ontology) if ontology else None
    store = _store()
    client = _connect(url, org, insecure, ca_cert)
    with domain_errors():
        result = push_run(
            store, client, dataset=dataset, run_name=run, task_name=task_name, ontology=onto, project_id=project,
            segment_size=segment_size, assignees=plan, force=force, report=lambda m: err.print(m, highlight=False),
            sample_ids=sample_ids,
        )
    out.print(
        f"task {result.task_id}: {len(result.jobs)} jobs, {result.shapes} pre-labels "
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
    client = _connect(url, org, insecure, ca_cert)
    try:
        with domain_errors():
            result = pull_jobs(store, client, task_id=task, project_id=project, stage=stage, state=state,
                               report=lambda m: err.print(m, highlight=False))
    except ValueError as error:
        fail(str(error))
    out.print(f"pulled {len(result.pulled)} jobs ({result.shapes} shapes), {len(result.unchanged)} unchanged")


@app.command()
def status(
    dataset: Annotated[str | None, typer.Option(help="Only tasks of this dataset.")] = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Per task and job: stage, state, assignee, last pull, pre-labels pushed vs shapes now."""
    from rich.table import Table

    from cvat_bridge.annotations import job_annotations
    from cvat_bridge.client import public_url
    from cvat_bridge.jobs import list_jobs

    store = _store()
    client = _connect(url, org, insecure, ca_cert)
    server = public_url(client.api_map.host)
    with domain_errors():
        datasets = [store.get_dataset(dataset)] if dataset else store.list_datasets()
        table = Table(title=f"CVAT tasks on {server}")
        columns = ("dataset", "task", "job", "frames", "stage", "state", "assignee", "last pulled", "pre-labels", "now")
        for column in columns:
            table.add_column(column)
        for ds in datasets:
            for link in store.cvat_tasks(ds):
                if link.server != server:
                    continue
                known_jobs = {j.job_id: j for j in store.jobs_of(link)}
                pushed = store.pushed_shapes(link)
                live = list_jobs(client, task_id=link.task_id)
                for job in live:
                    now = job_annotations(client, job.id)
                    now_ids = {int(s["id"]) for s in now["shapes"]}
                    known = known_jobs.get(job.id)
                    table.add_row(
                        ds.name, f"{link.task_id} {link.name}", str(job.id), f"{job.start_frame}-{job.stop_frame}",
                        job.stage, job.state, job.assignee or "-",
                        known.last_pulled_at.strftime("%Y-%m-%d %H:%M") if known and known.last_pulled_at else "never",
                        str(_pushed_in_job(store, link, job)), f"{len(now_ids)} ({len(now_ids & pushed.keys())} kept)",
                    )
    out.print(table)


def _pushed_in_job(store: Any, link: Any, job: Any) -> int:
    frames = store.frames_of(link)
    samples = {frames[f] for f in range(job.start_frame, job.stop_frame + 1) if f in frames}
    run = store.run_by_id(link.run_id) if link.run_id else None
    if run is None:
        return 0
    return sum(len(d) for sid, d in store.annotations_of(run, sample_ids=sorted(samples)).items())
