"""Validated field types shared by every config (AgentConfig, TrainConfig, EvalConfig, RetrievalConfig, ...).

One definition of each rule, so that every config words a bad value the same way:
"`k` must be >= 1, got 0". Use as a field's type: `k: PositiveInt = Field(10, description=...)`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo


def bound(low: float, strict: bool = False, high: float | None = None, note: str = "") -> AfterValidator:
    """A validator: value >= low (> low when `strict`, <= high when given); None passes (optional fields)."""

    def check(v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        bad = v <= low if strict else v < low
        if high is not None:
            bad = bad or v > high
        if bad:
            rule = f"between {low:g} and {high:g}" if high is not None else f"{'>' if strict else '>='} {low:g}"
            raise ValueError(f"`{info.field_name}` must be {rule}{note}, got {v}")
        return v

    return AfterValidator(check)


PositiveInt = Annotated[int, bound(1)]
NonNegativeInt = Annotated[int, bound(0)]
NonNegativeFloat = Annotated[float, bound(0)]
PositiveFloat = Annotated[float, bound(0, strict=True)]
UnitFloat = Annotated[float, bound(0, high=1)]
