"""SendGrid's v3 API over HTTP: one request through the official client, its failures sorted into
"try again later" and "refused", and the backoff that decides when later is."""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from consent_service.domain import ConsentServiceError

logger = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
_RETRYABLE_STATUSES = frozenset({408, 429})


class SendGridError(ConsentServiceError):
    """A SendGrid call that did not succeed."""


class SendGridNotConfiguredError(SendGridError):
    """No API key: nothing can be sent to SendGrid."""


class SendGridUnavailableError(SendGridError):
    """Worth trying again later: rate limited (429), SendGrid's own error (5xx), a timeout or a
    dropped connection. `reset_at` is SendGrid's X-RateLimit-Reset, when it gave one."""

    def __init__(self, message: str, *, status: int | None = None,
                 reset_at: datetime | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reset_at = reset_at

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class SendGridRejectedError(SendGridError):
    """SendGrid refused the request itself (a 4xx other than 429): repeating it will not help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def retry_at(attempt: int, now: datetime, reset_at: datetime | None = None, *,
             rng: random.Random | None = None) -> datetime:
    """When to try again after `attempt` failed tries: exponential backoff (30 s doubling, at most
    an hour) with jitter (a random point in the upper half, so retries spread out), and never before
    SendGrid's rate-limit reset, unless that reset is absurdly far (more than the cap)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    seconds = ceiling.total_seconds()
    at = now + timedelta(seconds=(rng or random).uniform(seconds / 2, seconds))
    if reset_at is not None and at < reset_at <= now + BACKOFF_CAP:
        at = reset_at
    return at


class SendGridApi:
    """One SendGrid account through the official `sendgrid` client. Requests either return the
    decoded JSON answer (None for an empty one) or raise SendGridUnavailableError /
    SendGridRejectedError. Reads (GET) are tried up to `read_attempts` times, waiting with `sleep`
    between tries; writes are tried once: the caller's outbox reschedules them, so that nothing
    sleeps where a request or a worker is waiting."""

    def __init__(self, api_key: str, host: str, *, timeout: float = 10.0, read_attempts: int = 1,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        if not api_key:
            raise SendGridNotConfiguredError(
                "SendGrid is not configured: set CONSENT_SENDGRID_API_KEY")
        self._sendgrid = SendGridAPIClient(api_key=api_key, host=host)
        self._sendgrid.client.timeout = timeout
        self._read_attempts = max(read_attempts, 1)
        self._sleep = sleep
        self._clock = clock

    def request(self, method: str, path: Sequence[str | int], *, body: Any = None,
                query: Mapping[str, str | int] | None = None) -> Any:
        """Call `method` on /v3/<path...>; each path part is URL-quoted (addresses may hold `+`)."""
        attempts = self._read_attempts if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._once(method, path, body, query)
            except SendGridUnavailableError as error:
                if attempt == attempts:
                    raise
                self._sleep(self._wait_seconds(attempt, error))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, method: str, path: Sequence[str | int], body: Any,
              query: Mapping[str, str | int] | None) -> Any:
        endpoint = self._sendgrid.client
        for part in path:
            endpoint = endpoint._(quote(str(part), safe="@"))
        call = getattr(endpoint, method.lower())
        label = f"{method} /v3/{'/'.join(str(p) for p in path[:3])}…"
        try:
            response = call(request_body=body, query_params=dict(query) if query else None)
        except HTTPError as error:
            raise _classified(error, label) from None
        except (OSError, http.client.HTTPException) as error:  # timeouts, dropped connections
            raise SendGridUnavailableError(f"{label}: {type(error).__name__}: {error}") from None
        raw = response.body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise SendGridUnavailableError(f"{label}: the answer is not JSON") from None

    def _wait_seconds(self, attempt: int, error: SendGridUnavailableError) -> float:
        now = datetime.fromtimestamp(self._clock(), UTC)
        return max((retry_at(attempt, now, error.reset_at) - now).total_seconds(), 0.0)


def _classified(error: HTTPError, label: str) -> SendGridError:
    status = int(error.status_code)
    message = f"{label}: HTTP {status}: {_error_text(error.body)}"
    if status in _RETRYABLE_STATUSES or status >= 500:
        return SendGridUnavailableError(message, status=status, reset_at=rate_limit_reset(error.headers))
    return SendGridRejectedError(message, status=status)


def rate_limit_reset(headers: Any) -> datetime | None:
    """SendGrid's X-RateLimit-Reset (a Unix time) from an answer's headers, if it gave one."""
    value = headers.get("X-RateLimit-Reset") if headers is not None else None
    try:
        return datetime.fromtimestamp(int(value), UTC) if value else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _error_text(body: Any) -> str:
    """SendGrid's own error messages, shortened; never the request (it may hold addresses)."""
    try:
        errors = json.loads(body)["errors"]
        text = "; ".join(str(item.get("message", "")) for item in errors)
    except (TypeError, ValueError, KeyError, AttributeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return text[:300]
