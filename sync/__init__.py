"""The local label store, sync with CVAT, evaluation, export and the ``autolabel`` CLI."""
