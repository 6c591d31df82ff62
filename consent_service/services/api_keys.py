"""API keys for other systems: created with scopes and shown once, stored hashed, checked, revoked.

A key is `csk_` and 43 URL-safe characters: 256 bits from `secrets`. Only its SHA-256 is kept.
A slow password hash (argon2, as staff passwords get) is not needed and would hurt: it exists to
make guessing a low-entropy secret expensive, and nobody guesses one of 2^256 keys however fast
each guess is; a stolen table of SHA-256 hashes gives no key back. A fast, unsalted hash is also
what lets a request find its key with one indexed lookup instead of verifying a slow hash per
request, which would cost each call tens of milliseconds of CPU and hand out a way to load the
server. The first 12 characters (`prefix`) are kept in clear to tell keys apart in lists.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.domain.text import clean_text
from consent_service.models import ApiKey

KEY_START = "csk_"
PREFIX_LENGTH = 12  # "csk_" and 8 random characters, shown in lists and accepted by revoke
NAME_LENGTH = 100
# A key's last use is written at most this often, so that reading the API is not a write per call.
LAST_USED_PRECISION = timedelta(minutes=1)


class Scope(StrEnum):
    """What a key may do."""

    PATRONS_WRITE = "patrons:write"  # create and update patron records
    CONSENTS_READ = "consents:read"  # decisions in force, eligibility, the ledger feed
    CONSENTS_WRITE = "consents:write"  # record decisions
    EXPORTS_READ = "exports:read"  # eligible-contact exports
    PATRONS_ERASE = "patrons:erase"  # erase a patron's personal data (its own scope: irreversible)


_SCOPE_NAMES = frozenset(scope.value for scope in Scope)


class ApiKeyError(ConsentServiceError):
    """A key that cannot be created or revoked as asked; the message says why."""


class UnknownApiKeyError(ConsentServiceError):
    """A request with no key, a key we do not know, or a revoked one."""


@dataclass(frozen=True)
class ApiClient:
    """The system a request's key belongs to."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as `apikeys list` shows it (never the key itself)."""

    name: str
    prefix: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """The SHA-256 (hex) a key is stored and looked up by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(names: list[str] | tuple[str, ...]) -> tuple[Scope, ...]:
    """The scopes named, in the order of `Scope`; at least one.

    :raise ApiKeyError: for no scope, or a name that is not a scope (the scopes are listed)."""
    chosen: set[Scope] = set()
    for name in names:
        try:
            chosen.add(Scope(name.strip().lower()))
        except ValueError:
            raise ApiKeyError(f"unknown scope {name!r}; the scopes are: "
                              f"{', '.join(scope.value for scope in Scope)}") from None
    if not chosen:
        raise ApiKeyError("a key needs at least one scope: "
                          f"{', '.join(scope.value for scope in Scope)}")
    return tuple(scope for scope in Scope if scope in chosen)


def create_api_key(session: Session, name: str, scopes: list[str] | tuple[str, ...], *,
                   now: datetime) -> tuple[ApiKeyInfo, str]:
    """Create a key and commit; the key itself is returned this once and never stored.

    :raise ApiKeyError: an empty or overlong name, a name in use (revoked keys keep theirs), or
        bad scopes.
    :raise UnsafeTextError: a name holding a control character.
    """
    label = clean_text(name.strip(), field="name")
    if not label or len(label) > NAME_LENGTH:
        raise ApiKeyError(f"a key's name is 1 to {NAME_LENGTH} characters")
    chosen = parse_scopes(scopes)
    if session.scalar(select(ApiKey.id).where(ApiKey.name == label)) is not None:
        raise ApiKeyError(f"a key named {label!r} exists already (revoked keys keep their names)")
    key = KEY_START + secrets.token_urlsafe(32)
    row = ApiKey(name=label, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key),
                 scopes=" ".join(chosen), created_at=now)
    session.add(row)
    session.commit()
    return _info(row), key


def list_api_keys(session: Session) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, oldest first."""
    return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_api_key(session: Session, name_or_prefix: str, *, now: datetime) -> tuple[ApiKeyInfo, bool]:
    """Revoke the key with this name or prefix and commit; whether it was revoked just now (False
    when it was already). A revoked key is refused from the next request on.

    :raise ApiKeyError: no key has that name or prefix.
    """
    wanted = name_or_prefix.strip()
    row = session.scalar(select(ApiKey).where(or_(ApiKey.name == wanted, ApiKey.prefix == wanted)))
    if row is None:
        raise ApiKeyError(f"no API key is named {wanted!r} or starts {wanted!r} "
                          "(see `apikeys list`)")
    if row.revoked_at is not None:
        return _info(row), False
    row.revoked_at = now
    session.commit()
    return _info(row), True


def authenticate(session: Session, key: str | None, *, now: datetime) -> ApiClient:
    """The client whose key this is; notes when it was last used (committing, at most once a
    minute per key).

    :raise UnknownApiKeyError: no key, an unknown key or a revoked one.
    """
    if not key:
        raise UnknownApiKeyError("send an API key as `Authorization: Bearer KEY`")
    row = session.connection().execute(_key_by_hash(), {"key_hash": hash_key(key)}).first()
    if row is None or row.revoked_at is not None:
        raise UnknownApiKeyError("the API key is unknown or revoked")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
    scopes = frozenset(Scope(name) for name in row.scopes.split() if name in _SCOPE_NAMES)
    return ApiClient(row.id, row.name, row.prefix, scopes)


@functools.cache
def _key_by_hash() -> Select[Any]:
    """`authenticate`'s statement, built once (every API request runs it): the key's columns,
    not an ORM object."""
    return select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.scopes, ApiKey.last_used_at,
                  ApiKey.revoked_at).where(ApiKey.key_hash == bindparam("key_hash"))


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(row.name, row.prefix, tuple(Scope(name) for name in row.scopes.split()),
                      row.created_at, row.last_used_at, row.revoked_at)
