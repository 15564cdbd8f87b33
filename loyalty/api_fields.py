"""JSON-typed serializer fields: a number must be a JSON number, a boolean a JSON boolean.

DRF's fields coerce: FloatField takes "0.5" and true (a bool is an int in Python),
BooleanField takes "yes" and 0, CharField takes 42. For settings that steer automation a
wrong type is a typo to refuse with the field named, not a value to guess (schemathesis'
negative checks found `"sample_rate": true` saved as 1.0).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
