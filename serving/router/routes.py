"""Route definitions: a public name and its weighted members. Validation lives here, once."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

TOTAL_WEIGHT = 100


class RouteMember(BaseModel):
    version: str = Field(min_length=1, description="A served model name: a base name or an adapter `name:tag`.")
    weight: float = Field(ge=0, le=TOTAL_WEIGHT)


class Route(BaseModel):
    name: str = Field(min_length=1)
    members: list[RouteMember] = Field(min_length=1)

    @field_validator("members")
    @classmethod
    def weights_sum_to_100(cls, members: list[RouteMember]) -> list[RouteMember]:
        versions = [m.version for m in members]
        if len(set(versions)) != len(versions):
            raise ValueError(f"a version appears twice: {versions}")
        total = sum(m.weight for m in members)
        if abs(total - TOTAL_WEIGHT) > 1e-6:
            raise ValueError(f"weights must sum to {TOTAL_WEIGHT}, got {total:g}")
        return members

    @property
    def versions(self) -> list[str]:
        return [m.version for m in self.members]

    @property
    def primary(self) -> str:
        """The member with the most traffic."""
        return max(self.members, key=lambda m: m.weight).version

    def weight_of(self, version: str) -> float:
        return next((m.weight for m in self.members if m.version == version), 0.0)

    def with_split(self, primary: str, canary: str, canary_weight: float) -> Route:
        """The route with only `primary` and `canary`, the canary at `canary_weight` percent."""
        if canary_weight >= TOTAL_WEIGHT:
            members = [RouteMember(version=canary, weight=TOTAL_WEIGHT)]
        elif canary_weight <= 0:
            members = [RouteMember(version=primary, weight=TOTAL_WEIGHT)]
        else:
            members = [
                RouteMember(version=primary, weight=TOTAL_WEIGHT - canary_weight),
                RouteMember(version=canary, weight=canary_weight),
            ]
        return Route(name=self.name, members=members)
