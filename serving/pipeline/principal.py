"""Who is calling: the API key's id, role and the models it may use (the anonymous admin while auth is off)."""

from __future__ import annotations

from dataclasses import dataclass

from serving.errors import PermissionDeniedError

ANONYMOUS_ID = "anonymous"


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    models: tuple[str, ...] = ()
    priority: int = 0
    """Under overload, a route's `shed_priority` step sheds callers below a level (the anonymous caller: 0)."""

    def check_model(self, model: str) -> None:
        if self.models and model not in self.models:
            raise PermissionDeniedError(f"Key `{self.key_id}` may not call `{model}`.", param="model")


ANONYMOUS = Principal(ANONYMOUS_ID, "admin")
