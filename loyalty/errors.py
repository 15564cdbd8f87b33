"""The one shape of a settings change that cannot be saved: every bad field, named."""

from __future__ import annotations


class FieldErrors(ValueError):
    """`errors` maps a field name to what is wrong with it (the API answers them as a 400)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
