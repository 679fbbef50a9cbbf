"""Deep-merge an overrides YAML into a Nuclio function configuration (used by deploy.sh).

    python deploy/nuclio/merge_overrides.py function-gpu.yaml overrides.yaml --out merged.yaml

Mappings merge key by key (the override wins on conflicts); lists and scalars in the override
replace the base value. Comments and the ``metadata.annotations.spec`` block text of the base
survive (ruamel.yaml round trip). Exits 2 with a one-line reason on unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base`` (mappings recursively, everything else replaced)."""
    if isinstance(base, MutableMapping) and isinstance(override, MutableMapping):
        for key, value in override.items():
            base[key] = merge(base[key], value) if key in base else value
        return base
    return override


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="function.yaml or function-gpu.yaml")
    parser.add_argument("overrides", type=Path, help="YAML mapping to merge in")
    parser.add_argument("--out", type=Path, required=True, help="where to write the merged configuration")
    args = parser.parse_args(argv)

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML()
    yaml.preserve_quotes = True
    documents = []
    for path in (args.base, args.overrides):
        try:
            documents.append(yaml.load(path.read_text(encoding="utf-8")))
        except (OSError, YAMLError) as err:
            print(f"error: {path}: {err}".splitlines()[0], file=sys.stderr)
            return 2
        if not isinstance(documents[-1], MutableMapping):
            print(f"error: {path}: expected a YAML mapping at the top level", file=sys.stderr)
            return 2
    merged = merge(documents[0], documents[1])
    with args.out.open("w", encoding="utf-8") as handle:
        yaml.dump(merged, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
