"""The Jinja2 environment for the desk's hottest template: the queue rows.

A queue page renders 50 rows with three forms each, and every decision re-renders its row
for the htmx swap. Django's template language spent ~100 ms of CPU on one page; Jinja2
compiles the same markup to Python and renders it several times faster. Every other page
stays on Django templates. The filters are the desk's own (recommendations.templatetags.desk),
registered here rather than copied.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

from django.urls import reverse
from django.utils import timezone
from jinja2 import Environment

from recommendations.templatetags import desk


def local_minute(value: datetime | None) -> str:
    """`Y-m-d H:i` in the current time zone, as Django's `date` filter shows it."""
    if value is None:
        return ""
    return (timezone.localtime(value) if timezone.is_aware(value) else value).strftime("%Y-%m-%d %H:%M")


# Digits satisfy both the int and the str path converters the row's routes use.
_ARG = "9876543210123"


@lru_cache(maxsize=32)
def _url_template(name: str) -> str:
    return reverse(name, args=[_ARG])


def url(name: str, arg: object) -> str:
    """reverse(name, args=[arg]) for one-argument routes, resolved once per route name: the
    rows need 150 of them a page and reverse() walks the resolver every time. The cached
    template includes the script prefix of the first call: one process serves one prefix."""
    return _url_template(name).replace(_ARG, quote(str(arg), safe="!$&'()*+,;=~:@"))


def environment(**options) -> Environment:
    env = Environment(**options)
    env.filters.update(
        pct=desk.pct, svgx=desk.svgx, money=desk.money, signed_money=desk.signed_money, churn=desk.churn,
        local_minute=local_minute,
    )
    env.globals["url"] = url
    env.globals["ev_range_note"] = desk.EV_RANGE_NOTE
    return env
