"""Seconds an annotator spends per action, for the time-saved estimates.

The defaults follow published annotation-time studies: verifying or adjusting a box takes
about 7 s, deleting a false one about 1-2 s, drawing one from scratch about 25-35 s
(Papadopoulos et al., "Extreme clicking", ICCV 2017: ~7 s per box for verification-style
work against ~25-35 s for drawing; Su et al., "Crowdsourcing annotations for visual object
detection", 2012). Every report states the values it used; `autolabel eval` takes them
as options.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["ActionSeconds"]


@dataclass(frozen=True)
class ActionSeconds:
    """Seconds per annotator action (all >= 0)."""

    verify: float = 7.0
    """Look at a pre-label and accept it unchanged."""
    adjust: float = 7.0
    """Move or resize a pre-label's geometry."""
    relabel: float = 7.0
    """Change a pre-label's class."""
    delete: float = 1.5
    """Delete a false pre-label."""
    draw: float = 30.0
    """Draw a shape from scratch (a missed object, or every object without pre-labels)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"seconds per action: {name} must be a finite number >= 0, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}
