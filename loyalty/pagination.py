"""List pagination that refuses a malformed limit or offset instead of ignoring it."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """DRF falls back to the defaults on ?offset=abc: a client would silently get page one."""

    def get_limit(self, request) -> int:  # noqa: ANN001 - DRF hook
        limit = self._whole_number(request, self.limit_query_param)
        if limit == 0:
            raise ValidationError({self.limit_query_param: ["limit must be above 0"]})
        return self.default_limit if limit is None else limit

    def get_offset(self, request) -> int:  # noqa: ANN001 - DRF hook
        return self._whole_number(request, self.offset_query_param) or 0

    @staticmethod
    def _whole_number(request, name: str) -> int | None:  # noqa: ANN001
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise ValidationError({name: [f"{name} must be a whole number, got {raw!r}"]})
        return int(raw)
