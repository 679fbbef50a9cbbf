"""deploy/kubernetes/rayjob.yaml: a KubeRay RayJob whose entrypoint is an ``autolabel prelabel
--engine ray`` command our CLI parses, with the store URL from a Secret and the images on one
volume mounted at the same path on the head and every worker. (No cluster here: the manifest
is checked against what the command and the engine need.)"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

import pytest
import typer
import yaml

from sync.cli import app
from tests.conftest import ROOT

RAYJOB = ROOT / "deploy" / "kubernetes" / "rayjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict:
    (document,) = list(yaml.safe_load_all(RAYJOB.read_text()))
    return document


@pytest.fixture(scope="module")
def entrypoint(job) -> dict:
    """The entrypoint parsed by the ``prelabel`` command itself (nothing runs)."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["autolabel", "prelabel"]
    command = typer.main.get_command(app).commands["prelabel"]
    context = command.make_context("prelabel", argv[2:])  # unknown options and bad values raise here
    return context.params


def pods(job) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]


def test_it_is_a_rayjob_running_the_ray_engine_inside_its_cluster(job, entrypoint):
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert entrypoint["engine"] == "ray" and entrypoint["address"] == "auto"
    assert entrypoint["dataset"] and entrypoint["run"]  # a named run: rerunning the job resumes it
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_the_store_url_comes_from_a_secret_and_is_written_nowhere(job):
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (store,) = [e for e in head["env"] if e["name"] == "AUTOLABEL_DB"]
    assert set(store) == {"name", "valueFrom"} and store["valueFrom"]["secretKeyRef"]["name"]
    assert "postgresql" not in job["spec"]["entrypoint"]


def test_the_images_are_on_one_volume_mounted_at_the_same_path_everywhere(job, entrypoint):
    mounts = set()
    for pod in pods(job):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts |= {(claims[m["name"]], m["mountPath"]) for m in container["volumeMounts"]}
    ((claim, path),) = mounts
    for image in [*entrypoint["images"], entrypoint["ontology"]]:
        assert PurePosixPath(image).is_relative_to(path), image


def test_each_gpu_worker_holds_one_model_worker(job, entrypoint):
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == 1 == entrypoint["gpus_per_worker"]
    assert entrypoint["ray_workers"] == group["replicas"] == group["minReplicas"] == group["maxReplicas"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]  # the head only drives
