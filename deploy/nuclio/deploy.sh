#!/usr/bin/env bash
# Deploy autolabel's Nuclio functions for CVAT with nuctl (CPU or GPU, Docker or Kubernetes).
#
#   deploy/nuclio/deploy.sh [--gpu] [--ontology FILE] [--functions a,b] [--platform local|kube] ...
#
# Steps: render the function directories from the ontology (`autolabel functions render`),
# build the project wheel once and copy it into each directory's wheels/ (the image build
# installs it, then fetches the weights at pinned revisions with checksums: see
# serverless/weights.py), make sure the nuctl project `cvat` exists (CVAT lists only that
# project), then `nuctl deploy --project-name cvat` every function. --dry-run prints the
# commands and runs none of them. See docs/deploy.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
ALL_FUNCTIONS="grounding-dino,grounded-sam,sam,sam-interactor"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Render, build and deploy autolabel's Nuclio functions into the nuctl project "cvat".

  --ontology FILE        ontology YAML to render the functions from
                         (default: $REPO_ROOT/samples/ontology.yaml)
  --functions LIST       comma-separated subset of $ALL_FUNCTIONS (default: all); with
                         --rendered, any rendered function directory (e.g. yolo, owlv2, clip)
  --gpu                  deploy function-gpu.yaml (CUDA base image, nvidia.com/gpu: 1, one worker)
  --platform P           local (Docker; default) or kube (Kubernetes)
  --namespace NS         Nuclio namespace; must equal CVAT_NUCLIO_FUNCTION_NAMESPACE (default: nuclio)
  --registry URL         registry to push images to (required with --platform kube)
  --run-registry URL     registry the cluster pulls from, if it differs from --registry
  --overrides FILE       YAML deep-merged into every function configuration before deploying
                         (e.g. deploy/kubernetes/function-gpu.overrides.yaml: replicas, nodeSelector,
                         tolerations)
  --network NAME         local only: Docker network for the function containers (e.g. cvat_cvat)
  --gdino-model ID       Grounding DINO hub id baked into the images (passed to render)
  --sam-model-type T     SAM size of grounded-sam and sam-interactor: vit_h, vit_l or vit_b
  --workdir DIR          where to render (default: a new temporary directory, kept for inspection)
  --rendered DIR         deploy function directories already rendered into DIR (skips rendering)
  --autolabel CMD        the autolabel command (default: autolabel on PATH, else .venv/bin/autolabel)
  --python PY            Python used for pip wheel and --overrides (default: .venv/bin/python, else python3)
  --dry-run              print the commands, run none of them
  -h, --help             show this help
EOF
}

die() {
    echo "error: $*" >&2
    exit 2
}

DRY_RUN=0
GPU=0
PLATFORM=local
NAMESPACE=nuclio
ONTOLOGY=""
FUNCTIONS="$ALL_FUNCTIONS"
REGISTRY=""
RUN_REGISTRY=""
OVERRIDES=""
NETWORK=""
GDINO_MODEL=""
SAM_MODEL_TYPE=""
WORKDIR=""
RENDERED=""
AUTOLABEL=""
PYTHON=""

need_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --ontology) need_value "$@"; ONTOLOGY="$2"; shift 2 ;;
        --functions) need_value "$@"; FUNCTIONS="$2"; shift 2 ;;
        --gpu) GPU=1; shift ;;
        --platform) need_value "$@"; PLATFORM="$2"; shift 2 ;;
        --namespace) need_value "$@"; NAMESPACE="$2"; shift 2 ;;
        --registry) need_value "$@"; REGISTRY="$2"; shift 2 ;;
        --run-registry) need_value "$@"; RUN_REGISTRY="$2"; shift 2 ;;
        --overrides) need_value "$@"; OVERRIDES="$2"; shift 2 ;;
        --network) need_value "$@"; NETWORK="$2"; shift 2 ;;
        --gdino-model) need_value "$@"; GDINO_MODEL="$2"; shift 2 ;;
        --sam-model-type) need_value "$@"; SAM_MODEL_TYPE="$2"; shift 2 ;;
        --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
        --rendered) need_value "$@"; RENDERED="$2"; shift 2 ;;
        --autolabel) need_value "$@"; AUTOLABEL="$2"; shift 2 ;;
        --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

# ----------------------------------------------------------------------------- checks

case "$PLATFORM" in
    local | kube) ;;
    *) die "--platform must be local or kube, got '$PLATFORM'" ;;
esac
if [[ "$PLATFORM" == kube && -z "$REGISTRY" ]]; then
    die "--platform kube needs --registry URL (the cluster pulls the function images from it)"
fi
if [[ "$PLATFORM" == kube && -n "$NETWORK" ]]; then
    die "--network is a Docker setting; it does not apply to --platform kube"
fi
if [[ -n "$SAM_MODEL_TYPE" ]]; then
    case "$SAM_MODEL_TYPE" in
        vit_h | vit_l | vit_b) ;;
        *) die "--sam-model-type must be vit_h, vit_l or vit_b, got '$SAM_MODEL_TYPE'" ;;
    esac
fi
if [[ -n "$RENDERED" && ( -n "$ONTOLOGY" || -n "$GDINO_MODEL" || -n "$SAM_MODEL_TYPE" ) ]]; then
    die "--rendered deploys directories as they are; --ontology, --gdino-model and --sam-model-type apply to rendering"
fi

IFS=',' read -r -a SELECTED <<<"$FUNCTIONS"
[[ ${#SELECTED[@]} -gt 0 ]] || die "--functions is empty; choose from $ALL_FUNCTIONS"
for name in "${SELECTED[@]}"; do
    [[ "$name" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "--functions: '$name' is not a function directory name"
    if [[ -z "$RENDERED" ]]; then  # rendered directories are checked below, whatever their models
        case ",$ALL_FUNCTIONS," in
            *",$name,"*) ;;
            *) die "unknown function '$name' in --functions; choose from $ALL_FUNCTIONS (other models: render them, then --rendered DIR)" ;;
        esac
    fi
done

if [[ -n "$OVERRIDES" && ! -f "$OVERRIDES" ]]; then
    die "--overrides $OVERRIDES: no such file"
fi

if [[ -z "$PYTHON" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -z "$AUTOLABEL" ]]; then
    if command -v autolabel >/dev/null 2>&1; then
        AUTOLABEL=autolabel
    elif [[ -x "$REPO_ROOT/.venv/bin/autolabel" ]]; then
        AUTOLABEL="$REPO_ROOT/.venv/bin/autolabel"
    else
        AUTOLABEL=autolabel
    fi
fi

CONFIG_FILE=function.yaml
if [[ "$GPU" == 1 ]]; then CONFIG_FILE=function-gpu.yaml; fi

if [[ -n "$RENDERED" ]]; then
    [[ -d "$RENDERED" ]] || die "--rendered $RENDERED: no such directory"
    FUNCTIONS_DIR="$(cd "$RENDERED" && pwd)"
    for name in "${SELECTED[@]}"; do
        [[ -f "$FUNCTIONS_DIR/$name/$CONFIG_FILE" ]] || die "$FUNCTIONS_DIR/$name/$CONFIG_FILE: not found (render it first, or pick --functions)"
    done
else
    ONTOLOGY="${ONTOLOGY:-$REPO_ROOT/samples/ontology.yaml}"
    [[ -f "$ONTOLOGY" ]] || die "--ontology $ONTOLOGY: no such file"
    if [[ -z "$WORKDIR" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            WORKDIR=WORKDIR
            echo "# dry run: WORKDIR stands for the temporary directory a real run creates"
        else
            WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/autolabel-nuclio.XXXXXX")"
        fi
    fi
    FUNCTIONS_DIR="$WORKDIR/functions"
fi

if [[ "$DRY_RUN" == 0 ]]; then
    command -v nuctl >/dev/null 2>&1 || die "nuctl is not on PATH; install the nuctl release matching your Nuclio dashboard (CVAT 2.17 pins 1.13.0)"
    if [[ -z "$RENDERED" ]]; then
        command -v "$AUTOLABEL" >/dev/null 2>&1 || die "cannot run '$AUTOLABEL'; install the project (pip install -e .) or pass --autolabel"
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "cannot run '$PYTHON'; pass --python"
fi

# ----------------------------------------------------------------------------- commands

# Print a command (shell-quoted, copy-pastable) and run it unless --dry-run.
run() {
    local quoted
    quoted="$(printf '%q ' "$@")"
    echo "+ ${quoted% }"
    if [[ "$DRY_RUN" == 0 ]]; then
        "$@"
    fi
}

PLATFORM_ARGS=(--platform "$PLATFORM" --namespace "$NAMESPACE")
if [[ "$DRY_RUN" == 1 ]]; then
    echo "# dry run: printing the commands, running none of them"
fi

# 1. Render.
if [[ -z "$RENDERED" ]]; then
    render=("$AUTOLABEL" functions render --ontology "$ONTOLOGY" --out "$FUNCTIONS_DIR" --kinds "$FUNCTIONS")
    if [[ -n "$GDINO_MODEL" ]]; then render+=(--gdino-model "$GDINO_MODEL"); fi
    if [[ -n "$SAM_MODEL_TYPE" ]]; then render+=(--sam-model-type "$SAM_MODEL_TYPE"); fi
    run "${render[@]}"
fi

# 2. The project wheel, built once, copied into every function directory's wheels/.
WHEEL_DIR="$FUNCTIONS_DIR/.wheels"
run rm -rf "$WHEEL_DIR"
run "$PYTHON" -m pip wheel --quiet --no-deps "$REPO_ROOT" -w "$WHEEL_DIR"
for name in "${SELECTED[@]}"; do
    run rm -rf "$FUNCTIONS_DIR/$name/wheels"
    run cp -R "$WHEEL_DIR" "$FUNCTIONS_DIR/$name/wheels"
done

# 3. The nuctl project CVAT lists functions from.
echo "+ nuctl get project cvat ${PLATFORM_ARGS[*]} || nuctl create project cvat ${PLATFORM_ARGS[*]}"
if [[ "$DRY_RUN" == 0 ]]; then
    if ! nuctl get project cvat "${PLATFORM_ARGS[@]}" >/dev/null 2>&1; then
        nuctl create project cvat "${PLATFORM_ARGS[@]}"
    fi
fi

# 4. Deploy.
for name in "${SELECTED[@]}"; do
    dir="$FUNCTIONS_DIR/$name"
    config="$dir/$CONFIG_FILE"
    if [[ -n "$OVERRIDES" ]]; then
        merged="$dir/${CONFIG_FILE%.yaml}.deploy.yaml"
        run "$PYTHON" "$SCRIPT_DIR/merge_overrides.py" "$config" "$OVERRIDES" --out "$merged"
        config="$merged"
    fi
    deploy=(nuctl deploy --project-name cvat --path "$dir" --file "$config" "${PLATFORM_ARGS[@]}")
    if [[ "$PLATFORM" == kube ]]; then
        deploy+=(--registry "$REGISTRY")
        if [[ -n "$RUN_REGISTRY" ]]; then deploy+=(--run-registry "$RUN_REGISTRY"); fi
    elif [[ -n "$NETWORK" ]]; then
        deploy+=(--platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}")
    fi
    echo "deploying $name ($CONFIG_FILE, platform $PLATFORM)"
    run "${deploy[@]}"
done

run nuctl get function "${PLATFORM_ARGS[@]}"
if [[ "$DRY_RUN" == 0 && -z "$RENDERED" ]]; then
    echo "rendered function directories kept in $FUNCTIONS_DIR"
fi
