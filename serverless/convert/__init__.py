"""Pure converters between `serverless.detections.Detections` and wire formats.

- `polygons`: masks ↔ polygon rings, tight mask boxes.
- `nuclio`: what a CVAT Nuclio detector / interactor / SAM encoder replies.
- `cvat_shapes`: cvat-sdk ``LabeledShapeRequest`` lists and back (masks via ``cvat_sdk.masks``).
- `coco`: COCO JSON dicts and back.

Every converter is a pure function; CVAT's inclusive bounds appear only inside `nuclio` and
`cvat_shapes`.
"""
