"""``autolabel store``: the label store itself (``AUTOLABEL_DB``): upgrade its schema, describe it."""

from __future__ import annotations

import typer

from sync.console import domain_errors, out

__all__ = ["app"]

app = typer.Typer(
    help="The label store (AUTOLABEL_DB, default ./autolabel.db): schema upgrades and a summary.",
    no_args_is_help=True,
)


def _say(message: str) -> None:
    """Print a line literally (store URLs may hold brackets, e.g. an IPv6 host)."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


@app.command()
def migrate() -> None:
    """Upgrade a store made by an older autolabel to this version's schema (back it up first).

    Safe to run while nothing else writes to the store; running it twice is harmless. A store
    from a newer autolabel is refused: upgrade autolabel instead.
    """
    from sync.store import SCHEMA_VERSION, upgrade_store

    with domain_errors():
        store, before = upgrade_store()
    store.close()
    if before == SCHEMA_VERSION:
        _say(f"the store at {store.url} is at schema version {SCHEMA_VERSION} already: nothing to do")
    else:
        _say(f"upgraded the store at {store.url} from schema version {before} to {SCHEMA_VERSION}")


@app.command()
def info() -> None:
    """Where the store is (password hidden), its schema version and what it holds."""
    from sync.store import open_store
    from sync.store.info import describe_store

    with domain_errors():
        with open_store(create=False) as store:
            summary = describe_store(store)
    _say(f"store: {summary.url} ({summary.backend}, schema version {summary.schema_version})")
    width = max(len(name) for name in summary.counts)
    for name, count in summary.counts.items():
        _say(f"  {name + ':':<{width + 1}} {count}")
