"""Encryption at rest for personal data (member name, email, birth date; event comments).

Values are Fernet tokens (AES-128-CBC + HMAC-SHA256, from the maintained `cryptography`
package). Keys come from settings.LOYALTY_PII_KEYS, newest first: the newest encrypts, every
key decrypts (MultiFernet), so a new key can be put in front while old rows are re-encrypted
by `manage.py rotate_pii_keys`.

Every write path goes through here: the ORM through the model fields below, the bulk COPY
paths (importer, simulator) through `encrypt_series`. Empty text stays empty and a missing
date stays NULL: there is nothing to hide in "no comment", and it keeps bulk loads cheap.

Ciphertext is randomised, so the database cannot filter or sort by these columns.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils.crypto import salted_hmac

# Fernet tokens are urlsafe base64 of a version byte 0x80: they always start with this.
TOKEN_PREFIX = "gAAAAA"
ERASED_PREFIX = "erased-"


class PIIDecryptionError(Exception):
    """A stored value is not a token any configured key can open."""


@lru_cache(maxsize=8)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    if not keys:
        raise ImproperlyConfigured("LOYALTY_PII_KEYS is empty")
    try:
        fernets = [Fernet(k.encode()) for k in keys]
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "LOYALTY_PII_KEYS must be comma-separated Fernet keys (Fernet.generate_key())"
        ) from exc
    return MultiFernet(fernets), fernets[0]


def _keys() -> tuple[MultiFernet, Fernet]:
    return _fernets(tuple(settings.LOYALTY_PII_KEYS))


def encrypt(value: str | None) -> str | None:
    """A token for `value` under the newest key; None and '' are stored as they are."""
    if value is None or value == "":
        return value
    return _keys()[0].encrypt(str(value).encode()).decode()


def decrypt(token: str | None) -> str | None:
    """The plaintext of a stored token; raises PIIDecryptionError when no key opens it."""
    if token is None or token == "":
        return token
    try:
        return _keys()[0].decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise PIIDecryptionError("stored personal data cannot be decrypted with LOYALTY_PII_KEYS") from exc


def is_current(token: str | None) -> bool:
    """True when `token` is empty or already encrypted under the newest key."""
    if token is None or token == "":
        return True
    try:
        _keys()[1].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def rotate(token: str | None) -> str | None:
    """Re-encrypt `token` under the newest key (keeping its plaintext)."""
    if token is None or token == "":
        return token
    try:
        return _keys()[0].rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise PIIDecryptionError("stored personal data cannot be decrypted with LOYALTY_PII_KEYS") from exc


def encrypt_series(values: pd.Series) -> pd.Series:
    """Encrypt a column for bulk writers (COPY, executemany); NaN/None stay None, '' stays ''.

    Missing and empty values are sorted out column-wise, so only values with text cost a
    Python call: a 1M-member program has ~24M event comments, nearly all empty.
    """
    multi = _keys()[0]
    missing = values.isna().to_numpy()
    text = values.where(~missing, "").astype(str).to_numpy(dtype=object)
    result = np.full(len(text), "", dtype=object)
    result[missing] = None
    for i in np.flatnonzero(text != ""):
        result[i] = multi.encrypt(text[i].encode()).decode()
    return pd.Series(result, index=values.index, dtype=object)


def erasure_token(external_id: str) -> str:
    """What replaces an erased member's external id: a keyed hash, not reversible without the
    secret key, that still lets importers recognise (and refuse) the same id again."""
    digest = salted_hmac("loyalty.erasure", external_id, algorithm="sha256").hexdigest()
    return f"{ERASED_PREFIX}{digest[:48]}"


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; Python code sees plaintext."""

    description = "Text encrypted at rest (Fernet)"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value)


class EncryptedDateField(models.TextField):
    """A date stored as a Fernet token of its ISO form; Python code sees a `date`."""

    description = "Date encrypted at rest (Fernet)"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> date | None:
        text = decrypt(value)
        return date.fromisoformat(text) if text else None

    def to_python(self, value: Any) -> date | None:
        if value is None or value == "" or isinstance(value, date):
            return value or None
        return models.DateField().to_python(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = self.to_python(value)
        return encrypt(value.isoformat()) if value is not None else None

    def value_to_string(self, obj: Any) -> str:
        value = self.value_from_object(obj)
        return value.isoformat() if value else ""

    def formfield(self, **kwargs: Any) -> forms.Field:
        return forms.DateField(required=not self.blank, **kwargs)


__all__ = [
    "EncryptedDateField",
    "EncryptedTextField",
    "PIIDecryptionError",
    "decrypt",
    "encrypt",
    "encrypt_series",
    "erasure_token",
    "is_current",
    "rotate",
]
