"""One module per command group of the ``autolabel`` CLI; each exposes ``app`` (a typer.Typer)
or ``register(app)``. Modules import only light libraries at the top."""
