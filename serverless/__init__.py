"""Models, the Detections container, ontologies, converters and the Nuclio functions."""
