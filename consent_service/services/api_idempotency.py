"""Idempotency-Key for the API's writes: the first response is kept, and a retry gets it back.

A write runs in one transaction with the record of its response, so the two are committed together
or not at all. Two requests with the same key at once both do the work, but the key is unique per
API key: the second to commit fails on it, is rolled back whole, and answers the first's stored
response. The work is therefore recorded once. Only successful answers are kept: a refused
request wrote nothing, so its retry simply runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consent_service.domain import ConsentServiceError
from consent_service.models import IdempotentResponse

KEY_LENGTH = 255


class IdempotencyKeyReusedError(ConsentServiceError):
    """The Idempotency-Key was used before, by this API key, for a different request."""


class ConcurrentWriteError(ConsentServiceError):
    """The write collided with another made at the same moment (the same new patron, say): nothing
    was written, and a retry will succeed."""


@dataclass(frozen=True)
class Answer:
    """A response to a write: its HTTP status and JSON body; `replayed` when it is the stored one."""

    status: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True)
class Claim:
    """A write sent with an Idempotency-Key: the API key's id, the key, the request's fingerprint."""

    api_key_id: int
    key: str
    fingerprint: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The SHA-256 of what makes two requests the same: method, path with query, and body bytes."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def stored_answer(session: Session, claim: Claim, *, now: datetime) -> Answer | None:
    """The answer kept for this key, or None (never used, or expired).

    :raise IdempotencyKeyReusedError: the key was used for another request (method, path or body).
    """
    row = session.scalar(select(IdempotentResponse).where(
        IdempotentResponse.api_key_id == claim.api_key_id, IdempotentResponse.key == claim.key))
    if row is None or row.expires_at <= now:
        return None
    if row.request_hash != claim.fingerprint:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used for a different request; use a new key for a new request")
    return Answer(row.status_code, json.loads(row.body), replayed=True)


def run_once(session: Session, claim: Claim | None, work: Callable[[], Answer], *, now: datetime,
             lifetime: timedelta) -> Answer:
    """Do a write and commit it once; with a claim, keep its answer for `lifetime` and answer a
    retry with it instead of doing the write again.

    `work` writes in the session without committing and returns the answer. Any error rolls the
    transaction back and is raised. When another request with the same key commits first, this
    one is rolled back and answers the stored response.

    :raise IdempotencyKeyReusedError: the key was used for a different request.
    :raise ConcurrentWriteError: the write collided with another one (without a key to settle it).
    """
    try:
        if claim is not None:
            stored = stored_answer(session, claim, now=now)
            if stored is not None:
                session.rollback()
                return stored
            session.execute(delete(IdempotentResponse).where(IdempotentResponse.expires_at <= now))
        answer = work()
        if claim is not None:
            session.add(IdempotentResponse(
                api_key_id=claim.api_key_id, key=claim.key, request_hash=claim.fingerprint,
                status_code=answer.status, body=json.dumps(answer.body, ensure_ascii=False),
                created_at=now, expires_at=now + lifetime))
            session.flush()
        session.commit()
        return answer
    except IntegrityError:
        session.rollback()
        if claim is not None:
            stored = stored_answer(session, claim, now=now)
            session.rollback()
            if stored is not None:
                return stored
        raise ConcurrentWriteError("the request collided with another made at the same moment; "
                                   "nothing was written: send it again") from None
    except BaseException:
        session.rollback()
        raise
