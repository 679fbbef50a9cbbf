#!/usr/bin/env bash
# Container entry point: render the functions for the mounted ontology, then serve them.
#
# Environment (defaults set in the Dockerfile):
#   AUTOLABEL_ONTOLOGY               ontology YAML inside the container (/config/ontology.yaml)
#   AUTOLABEL_FUNCTIONS              comma-separated kinds to serve
#   AUTOLABEL_PORT                   dashboard port = CVAT_NUCLIO_PORT (8070)
#   AUTOLABEL_GDINO_SOURCE           the Grounding DINO source baked in (build argument GDINO)
#   AUTOLABEL_RENDER_SAM_MODEL_TYPE  SAM size of grounded-sam / sam-interactor (vit_h; the image
#                                    must have been built with it in SAM_TYPES)
# Extra arguments are passed to `autolabel serve` (e.g. --log-level debug).
set -euo pipefail

ontology="${AUTOLABEL_ONTOLOGY:-/config/ontology.yaml}"
functions="${AUTOLABEL_FUNCTIONS:-grounding-dino,grounded-sam,sam,sam-interactor}"
port="${AUTOLABEL_PORT:-8070}"
sam_type="${AUTOLABEL_RENDER_SAM_MODEL_TYPE:-vit_h}"
out="$(mktemp -d "${TMPDIR:-/tmp}/autolabel-functions.XXXXXX")"

if [[ ! -f "$ontology" ]]; then
    echo "error: no ontology at $ontology; mount one (-v \$PWD/site.yaml:$ontology:ro) or set AUTOLABEL_ONTOLOGY" >&2
    exit 2
fi
if [[ ! -f "/opt/weights/sam/sam_${sam_type}.pth" && ",$functions," =~ ,(grounded-sam|sam-interactor), ]]; then
    echo "error: AUTOLABEL_RENDER_SAM_MODEL_TYPE=$sam_type but the image has no /opt/weights/sam/sam_${sam_type}.pth; rebuild with --build-arg SAM_TYPES=\"vit_h $sam_type\"" >&2
    exit 2
fi

autolabel functions render --ontology "$ontology" --out "$out" --kinds "$functions" \
    --sam-model-type "$sam_type" --gdino-model "${AUTOLABEL_GDINO_SOURCE:-IDEA-Research/grounding-dino-tiny}" >/dev/null
exec autolabel serve "$out" --host 0.0.0.0 --port "$port" "$@"
