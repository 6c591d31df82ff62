"""A fake SendGrid v3 API on 127.0.0.1 that refuses and records what its OpenAPI spec forbids."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import random
import re
import secrets
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

# SendGrid's own OpenAPI documents, kept in the repository (see its README for the source and licence).
SPEC_DIR = Path(__file__).resolve().parent / "sendgrid-openapi"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Answers the spec's prose documents but its response schema forbids: operation id -> body.
_DOCUMENTED_OFF_SCHEMA = {"GetGlobalSuppression": {}}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-cased, query values as sent)."""

    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class _Parameter:
    name: str
    location: str
    required: bool
    schema_type: str | None
    validator: Validator


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    path_names: tuple[str, ...]
    literal_segments: int
    parameters: tuple[_Parameter, ...]
    body_media_types: tuple[str, ...]
    body_required: bool
    body_validator: Validator | None
    response_validators: dict[int, Validator | None]

    def check(
        self, call: _Call, headers: dict[str, str], has_body: bool
    ) -> tuple[list[str], dict[str, list[Any]]]:
        """Return the spec problems of a request and its query values coerced to schema types."""
        problems: list[str] = []
        query: dict[str, list[Any]] = {}
        for parameter in self.parameters:
            if parameter.location == "path":
                raw = [call.path[parameter.name]]
            elif parameter.location == "query":
                raw = call.raw_query.get(parameter.name, [])
            elif parameter.location == "header":
                value = headers.get(parameter.name.lower())
                raw = [] if value is None else [value]
            else:
                continue
            if not raw:
                if parameter.required:
                    problems.append(
                        f"required {parameter.location} parameter {parameter.name!r} is missing"
                    )
                continue
            values = [_coerce(value, parameter.schema_type) for value in raw]
            for value in values:
                problems.extend(
                    f"{parameter.location} parameter {parameter.name!r}: {error.message}"
                    for error in parameter.validator.iter_errors(value)
                )
            if parameter.location == "query":
                query[parameter.name] = values
        known = {parameter.name for parameter in self.parameters if parameter.location == "query"}
        problems.extend(
            f"query parameter {name!r} is not in the spec"
            for name in sorted(set(call.raw_query) - known)
        )
        problems.extend(self._body_problems(call.body, headers.get("content-type", ""), has_body))
        return problems, query

    def _body_problems(self, body: Any, content_type: str, has_body: bool) -> list[str]:
        if not self.body_media_types:
            return ["the operation takes no request body"] if has_body else []
        if not has_body:
            if self.body_required or (
                self.body_validator is not None and not self.body_validator.is_valid({})
            ):
                return ["the request body is missing and the operation's schema needs one"]
            return []
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in self.body_media_types:
            return [f"Content-Type {media_type!r} is not one of {list(self.body_media_types)}"]
        if self.body_validator is None:
            return []
        return [
            f"body{_where(error.absolute_path)}: {error.message}"
            for error in self.body_validator.iter_errors(body)
        ]


class _Spec:
    """Every operation of the OpenAPI 3.1 documents in a folder, with validators for its inputs."""

    def __init__(self, spec_dir: Path) -> None:
        self.operations: list[_Operation] = []
        for spec_path in sorted(spec_dir.glob("*.json")):
            self._load(spec_path)
        if not self.operations:
            raise ValueError(f"no OpenAPI operations found in {spec_dir}")

    def match(self, method: str, path: str) -> tuple[_Operation, dict[str, str]] | str:
        """Find the operation for a request; literal path segments win over templated ones."""
        candidates = [
            (operation, found)
            for operation in self.operations
            if (found := operation.pattern.fullmatch(path))
        ]
        if not candidates:
            return f"no operation in the spec matches the path {path}"
        same_method = [candidate for candidate in candidates if candidate[0].method == method]
        if not same_method:
            allowed = ", ".join(sorted({operation.method for operation, _ in candidates}))
            return f"the spec allows only {allowed} on {path}"
        operation, found = max(same_method, key=lambda candidate: candidate[0].literal_segments)
        return operation, {
            name: unquote(value)
            for name, value in zip(operation.path_names, found.groups(), strict=True)
        }

    def _load(self, spec_path: Path) -> None:
        document = json.loads(spec_path.read_text(encoding="utf-8"))
        version = str(document.get("openapi", ""))
        if not version.startswith("3.1"):
            raise ValueError(
                f"{spec_path.name}: OpenAPI {version!r} is not 3.1, so not JSON Schema 2020-12"
            )
        _widen_nullable(document)
        uri = f"urn:sendgrid-openapi:{spec_path.name}"
        registry: Registry[Any] = Registry().with_resource(
            uri, DRAFT202012.create_resource(document)
        )

        def validator_at(pointer: str) -> Validator:
            schema = {"$ref": f"{uri}#{quote(pointer, safe='/~')}"}
            return Draft202012Validator(
                schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )

        for template, path_item in document["paths"].items():
            for method in _HTTP_METHODS:
                if method in path_item:
                    self.operations.append(_operation(document, template, method, validator_at))


def _operation(
    document: Any, template: str, method: str, validator_at: Callable[[str], Validator]
) -> _Operation:
    """Build one operation: its path pattern, parameters, body and response validators."""
    path_pointer = "/paths/" + _escape(template)
    operation_pointer = f"{path_pointer}/{method}"
    operation = _resolve(document, operation_pointer)
    parameters: dict[tuple[str, str], _Parameter] = {}  # operation-level ones override
    for base in (path_pointer, operation_pointer):
        for index in range(len(_resolve(document, base).get("parameters", []))):
            parameter, pointer = _follow(document, f"{base}/parameters/{index}")
            parameters[(parameter["name"].lower(), parameter["in"])] = _Parameter(
                name=parameter["name"],
                location=parameter["in"],
                required=bool(parameter.get("required", False)),
                schema_type=_schema_type(document, f"{pointer}/schema"),
                validator=validator_at(f"{pointer}/schema"),
            )
    body: dict[str, Any] = {}
    body_schema = None
    if "requestBody" in operation:
        body, body_schema = _json_schema_pointer(document, f"{operation_pointer}/requestBody")
    responses: dict[int, Validator | None] = {}
    for status in filter(str.isdigit, operation.get("responses", {})):
        _, schema = _json_schema_pointer(document, f"{operation_pointer}/responses/{status}")
        responses[int(status)] = None if schema is None else validator_at(schema)
    pieces = re.split(r"(\{[^}]+\})", template)
    return _Operation(
        method=method.upper(),
        template=template,
        operation_id=operation.get("operationId", f"{method.upper()} {template}"),
        pattern=re.compile(
            "".join("([^/]+)" if piece[:1] == "{" else re.escape(piece) for piece in pieces)
        ),
        path_names=tuple(piece[1:-1] for piece in pieces if piece[:1] == "{"),
        literal_segments=sum("{" not in segment for segment in template.split("/")),
        parameters=tuple(parameters.values()),
        body_media_types=tuple(body.get("content", {})),
        body_required=bool(body.get("required", False)),
        body_validator=None if body_schema is None else validator_at(body_schema),
        response_validators=responses,
    )


def _json_schema_pointer(document: Any, pointer: str) -> tuple[dict[str, Any], str | None]:
    """Follow a request body or response to its object and the pointer of its JSON schema."""
    node, pointer = _follow(document, pointer)
    has_schema = "schema" in node.get("content", {}).get("application/json", {})
    return node, f"{pointer}/content/application~1json/schema" if has_schema else None


@functools.lru_cache(maxsize=1)
def _load_spec() -> _Spec:
    return _Spec(SPEC_DIR)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _resolve(document: Any, pointer: str) -> Any:
    node = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _follow(document: Any, pointer: str) -> tuple[Any, str]:
    """Resolve an OpenAPI object, following local $refs (parameters, request bodies, responses)."""
    node = _resolve(document, pointer)
    while isinstance(node, dict) and str(node.get("$ref", "")).startswith("#/"):
        pointer = node["$ref"][1:]
        node = _resolve(document, pointer)
    return node, pointer


def _schema_type(document: Any, pointer: str) -> str | None:
    node = _resolve(document, pointer)
    while (
        isinstance(node, dict) and "type" not in node and str(node.get("$ref", "")).startswith("#/")
    ):
        node = _resolve(document, node["$ref"][1:])
    kind = node.get("type") if isinstance(node, dict) else None
    if isinstance(kind, list):
        return next((item for item in kind if item != "null"), None)
    return kind


def _widen_nullable(node: Any) -> None:
    """Honour the OpenAPI 3.0 keyword `nullable` that these 3.1 documents still use."""
    if isinstance(node, dict):
        if node.get("nullable") is True and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        for value in node.values():
            _widen_nullable(value)
    elif isinstance(node, list):
        for item in node:
            _widen_nullable(item)


def _coerce(value: str, schema_type: str | None) -> Any:
    """Turn a query, path or header string into the schema's type; keep it if it does not parse."""
    try:
        if schema_type == "integer":
            return int(value)
        if schema_type == "number":
            return float(value)
    except ValueError:
        return value
    if schema_type == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def _where(location: Iterable[Any]) -> str:
    parts = "/".join(str(part) for part in location)
    return f" at {parts}" if parts else ""


@dataclass
class _Call:
    label: str
    path: dict[str, str]
    raw_query: dict[str, list[str]]
    body: Any
    query: dict[str, list[Any]] = field(default_factory=dict)

    def first(self, name: str, default: Any = None) -> Any:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False  # reset the connection part way through the answer


@dataclass(frozen=True)
class _Failure:
    status: int | None
    reset_after_seconds: int = 1
    after_handling: bool = False  # the request is carried out, then the answer is cut


def _error(status: int, message: str, field_name: str | None = None) -> _Reply:
    return _Reply(status, {"errors": [{"field": field_name, "message": message}]})


def _email_matcher(pattern: str | None) -> Callable[[str], bool]:
    """SendGrid's `email` filter: a prefix match in which `%` stands for any run of characters."""
    if not pattern:
        return lambda _email: True
    regex = re.compile(".*".join(re.escape(part) for part in pattern.lower().split("%")))
    return lambda email: regex.match(email) is not None


class FakeSendGrid:
    """A SendGrid v3 API that keeps suppression state like SendGrid and records spec violations."""

    rate_limit = 600
    default_page_size = 500

    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self._spec = _load_spec()
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.clock: Callable[[], float] = time.time
        # called with each valid request just before it is carried out (a test's fault, e.g.)
        self.before_handling: Callable[[RecordedRequest], None] | None = None
        self.violations: list[str] = []
        self.requests: list[RecordedRequest] = []
        # the requests it carried out (answered 2xx, or cut after they were done), in order
        self.carried_out: list[RecordedRequest] = []
        self.groups: dict[int, dict[str, Any]] = {}
        self.group_suppressions: dict[int, set[str]] = {}
        self.group_suppression_created: dict[tuple[int, str], int] = {}
        self.global_unsubscribes: dict[str, int] = {}
        self.spam_reports: dict[str, dict[str, Any]] = {}
        self.bounces: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, dict[str, Any]] = {}
        self.invalid_emails: dict[str, dict[str, Any]] = {}
        self.sent_mail: list[dict[str, Any]] = []
        self._failures: deque[_Failure] = deque()
        self._request_resets = 0
        self.injected: Counter[str] = Counter()  # the faults it injected, by kind
        self._random_failures: tuple[float, random.Random] | None = None
        self._delay_seconds = 0.0
        self._slowed = threading.Semaphore(64)  # one per slowed request in progress, up to 64
        self._handlers: dict[str, Callable[[_Call], _Reply]] = {
            "ListAsmGroup": self._list_groups,
            "GetAsmGroup": self._get_group,
            "AddSuppressionToAsmGroup": self._add_group_suppressions,
            "ListSuppressionFromAsmGroup": self._list_group_suppressions,
            "DeleteSuppressionFromAsmGroup": self._delete_group_suppression,
            "SearchSuppressionFromAsmGroup": self._search_group_suppressions,
            "ListAsmSuppression": self._list_all_group_suppressions,
            "GetAsmSuppression": self._get_groups_of_email,
            "CreateGlobalSuppression": self._add_global_unsubscribes,
            "GetGlobalSuppression": self._get_global_unsubscribe,
            "DeleteGlobalSuppression": self._delete_global_unsubscribe,
            "ListGlobalSuppression": self._list_global_unsubscribes,
            "SendMail": self._send_mail,
        }
        for records, list_id, get_id, delete_one_id, delete_many_id in (
            (
                self.spam_reports,
                "ListSpamReport",
                "GetSpamReport",
                "DeleteSpamReport",
                "DeleteSpamReports",
            ),
            (
                self.bounces,
                "ListSuppressionBounces",
                "GetSuppressionBounces",
                "DeleteSuppressionBounce",
                "DeleteSuppressionBounces",
            ),
            (
                self.blocks,
                "ListSuppressionBlock",
                "GetSuppressionBlock",
                "DeleteSuppressionBlock",
                "DeleteSuppressionBlocks",
            ),
            (
                self.invalid_emails,
                "ListInvalidEmail",
                "GetInvalidEmail",
                "DeleteInvalidEmail",
                "DeleteInvalidEmails",
            ),
        ):
            self._handlers[list_id] = functools.partial(self._list_records, records)
            self._handlers[get_id] = functools.partial(self._get_record, records)
            self._handlers[delete_one_id] = functools.partial(self._delete_record, records)
            self._handlers[delete_many_id] = functools.partial(self._delete_records, records)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSendGrid:
        """Listen on a free port of 127.0.0.1 and answer from a background thread."""
        if self._server is not None:
            raise RuntimeError("the fake SendGrid server is already running")
        self._server = _Server(self._dispatch, self._take_request_reset)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-sendgrid",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, wait for answers in flight and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        server.server_close()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to pass as `host` to SendGridAPIClient, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("the fake SendGrid server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reset(self) -> None:
        """Forget all state, recorded requests, violations and injected failures."""
        with self._lock:
            for collection in (
                self.violations,
                self.requests,
                self.carried_out,
                self.groups,
                self.group_suppressions,
                self.group_suppression_created,
                self.global_unsubscribes,
                self.spam_reports,
                self.bounces,
                self.blocks,
                self.invalid_emails,
                self.sent_mail,
                self._failures,
                self.injected,
            ):
                collection.clear()
            self._random_failures = None
            self._delay_seconds = 0.0
            self._request_resets = 0

    def take_violations(self) -> list[str]:
        """Return the violations recorded so far and forget them."""
        with self._lock:
            taken = list(self.violations)
            self.violations.clear()
            return taken

    # -- seeding ---------------------------------------------------------------------------------

    def add_group(
        self, group_id: int, name: str, description: str = "", is_default: bool = False
    ) -> None:
        """Create an unsubscribe (ASM) group as if made in the SendGrid UI."""
        with self._lock:
            self.groups[group_id] = {
                "id": group_id,
                "name": name,
                "description": description,
                "is_default": is_default,
            }

    def add_group_suppression(self, group_id: int, email: str, created: int | None = None) -> None:
        """Record that an address unsubscribed from one group."""
        with self._lock:
            self.group_suppressions.setdefault(group_id, set()).add(email.lower())
            self.group_suppression_created[(group_id, email.lower())] = (
                self._now() if created is None else created
            )

    def add_global_unsubscribe(self, email: str, created: int | None = None) -> None:
        """Record that an address unsubscribed from everything."""
        with self._lock:
            self.global_unsubscribes[email.lower()] = self._now() if created is None else created

    def add_spam_report(
        self, email: str, created: int | None = None, ip: str = "192.0.2.10"
    ) -> None:
        """Record that a recipient marked a message as spam."""
        self._add_record(self.spam_reports, email, created, ip=ip)

    def add_bounce(
        self,
        email: str,
        created: int | None = None,
        reason: str = "550 5.1.1 The email account does not exist.",
        status: str = "5.1.1",
    ) -> None:
        """Record a bounce for an address."""
        self._add_record(self.bounces, email, created, reason=reason, status=status)

    def add_block(
        self,
        email: str,
        created: int | None = None,
        reason: str = "550 Blocked by the receiving server",
        status: str = "4.0.0",
    ) -> None:
        """Record a block for an address."""
        self._add_record(self.blocks, email, created, reason=reason, status=status)

    def add_invalid_email(
        self, email: str, created: int | None = None, reason: str = "Mail domain is unknown"
    ) -> None:
        """Record an address SendGrid considers invalid."""
        self._add_record(self.invalid_emails, email, created, reason=reason)

    def _add_record(
        self, records: dict[str, dict[str, Any]], email: str, created: int | None, **extra: str
    ) -> None:
        with self._lock:
            records[email.lower()] = {
                "created": self._now() if created is None else created,
                "email": email.lower(),
                **extra,
            }

    # -- failure injection -----------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 429, reset_after_seconds: int = 1) -> None:
        """Refuse the next n valid requests with `status` (429s: rate-limit headers), state kept."""
        with self._lock:
            self._failures.extend(_Failure(status, reset_after_seconds) for _ in range(n))

    def drop_next(self, n: int) -> None:
        """Close the connection unanswered for the next n valid requests, state untouched."""
        with self._lock:
            self._failures.extend(_Failure(None) for _ in range(n))

    def reset_next(self, n: int, *, during: str = "response") -> None:
        """Reset the connection (TCP RST) of the next n requests part way through.

        `during="request"`: after the request line and headers, before the body is read; nothing
        is recorded or changed. `during="response"`: after the request was carried out (state
        changed, mail accepted), part way through the answer's status line, so the client cannot know
        that it succeeded: the case in which a retry repeats a call SendGrid already honoured."""
        if during not in ("request", "response"):
            raise ValueError("during must be 'request' or 'response'")
        with self._lock:
            if during == "request":
                self._request_resets += n
            else:
                self._failures.extend(_Failure(None, after_handling=True) for _ in range(n))

    def _take_request_reset(self) -> bool:
        with self._lock:
            if self._request_resets > 0:
                self._request_resets -= 1
                self.injected["reset mid-request"] += 1
                return True
            return False

    def failure_rate(self, p: float, seed: int = 0) -> None:
        """Fail a fraction p of valid requests (429, 500 or dropped), repeatably from `seed`."""
        with self._lock:
            self._random_failures = (p, random.Random(seed)) if p > 0 else None

    def slow(self, seconds: float) -> None:
        """Wait this long before answering every valid request (0 turns the delay off)."""
        with self._lock:
            self._delay_seconds = seconds

    def wait_for_slowed(self, timeout: float = 30) -> None:
        """Wait until every request slowed by `slow` has been carried out or refused: SendGrid
        finishing what it was given before a client's retry comes (a real retry waits its backoff;
        a test's clock does not move real time)."""
        deadline = time.monotonic() + timeout
        taken = 0
        try:
            while taken < 64:
                if not self._slowed.acquire(timeout=max(deadline - time.monotonic(), 0)):
                    raise TimeoutError("slowed requests still in progress")
                taken += 1
        finally:
            for _ in range(taken):
                self._slowed.release()

    def _next_failure(self) -> _Failure | None:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
            if self._random_failures is not None:
                probability, generator = self._random_failures
                if generator.random() < probability:
                    return _Failure(generator.choice((429, 500, None)))
            return None

    def _failure_reply(self, failure: _Failure) -> _Reply:
        if failure.status != 429:
            return _error(failure.status or 500, "internal error (injected by the fake)")
        reply = _error(429, "too many requests")
        reply.headers.update(
            {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(self._now() + failure.reset_after_seconds),
            }
        )
        return reply

    # -- request handling ------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _violate(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)

    def _dispatch(
        self, method: str, target: str, headers: dict[str, str], raw_body: bytes
    ) -> _Reply | None:
        """Answer one request; None means drop the connection without answering."""
        split = urlsplit(target)
        label = f"{method} {split.path}"
        try:
            return self._answer(
                method, split.path, parse_qs(split.query, keep_blank_values=True), headers, raw_body
            )
        except Exception as error:  # a bug in the fake must fail the test, not hang the client
            self._violate(f"{label}: the fake itself failed: {error!r}")
            return _error(500, "the fake SendGrid server failed")

    def _answer(
        self,
        method: str,
        path: str,
        raw_query: dict[str, list[str]],
        headers: dict[str, str],
        raw_body: bytes,
    ) -> _Reply | None:
        label = f"{method} {path}"
        body: Any = None
        body_problem = None
        if raw_body:
            try:
                if headers.get("content-encoding", "").lower() == "gzip":
                    raw_body = gzip.decompress(raw_body)
                body = json.loads(raw_body)
            except (OSError, EOFError, ValueError) as error:
                body_problem = f"the body is not JSON: {error}"
        recorded = RecordedRequest(method, path, raw_query, body, dict(headers))
        with self._lock:
            self.requests.append(recorded)
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self._violate(f"{label}: missing or wrong `Authorization: Bearer <api key>` header")
            return _error(401, "authorization required")
        if body_problem is not None:
            self._violate(f"{label}: {body_problem}")
            return _error(400, body_problem)
        found = self._spec.match(method, path)
        if isinstance(found, str):
            self._violate(f"{label}: {found}")
            return _error(400, found)
        operation, path_params = found
        call = _Call(label=label, path=path_params, raw_query=raw_query, body=body)
        problems, call.query = operation.check(call, headers, has_body=bool(raw_body))
        if problems:
            self._violate(f"{label} ({operation.operation_id}): " + "; ".join(problems))
            return _Reply(
                400, {"errors": [{"field": None, "message": problem} for problem in problems]}
            )
        handler = self._handlers.get(operation.operation_id)
        if handler is None:
            message = f"the fake does not implement {operation.operation_id} ({operation.template})"
            self._violate(f"{label}: {message}")
            return _error(501, message)
        with self._lock:
            delay = self._delay_seconds
        if delay > 0:
            with self._lock:
                self.injected["slowed"] += 1
            self._slowed.acquire()  # released when this request is done (see wait_for_slowed)
            try:
                time.sleep(delay)
                return self._carry_out(recorded, handler, call, label, operation)
            finally:
                self._slowed.release()
        return self._carry_out(recorded, handler, call, label, operation)

    def _carry_out(
        self,
        recorded: RecordedRequest,
        handler: Callable[[_Call], _Reply],
        call: _Call,
        label: str,
        operation: _Operation,
    ) -> _Reply | None:
        """Inject the next failure, or carry the request out and answer."""
        if self.before_handling is not None:
            self.before_handling(recorded)
        failure = self._next_failure()
        if failure is not None:
            with self._lock:
                kind = ("reset mid-response" if failure.after_handling
                        else "dropped" if failure.status is None else str(failure.status))
                self.injected[kind] += 1
        if failure is not None and not failure.after_handling:
            return None if failure.status is None else self._failure_reply(failure)
        with self._lock:
            reply = handler(call)
            if reply.status < 300:
                self.carried_out.append(recorded)
        self._check_reply(label, operation, reply)
        return replace(reply, cut=True) if failure is not None else reply

    def _check_reply(self, label: str, operation: _Operation, reply: _Reply) -> None:
        """Hold the fake to the spec too: its own answers must match the documented responses."""
        if reply.status not in operation.response_validators:
            if reply.status < 300:
                self._violate(
                    f"{label}: fake bug: status {reply.status} is not documented in the spec"
                )
            return
        validator = operation.response_validators[reply.status]
        if _DOCUMENTED_OFF_SCHEMA.get(operation.operation_id, object()) == reply.body:
            return
        if validator is None:
            if reply.body is not None:
                self._violate(f"{label}: fake bug: status {reply.status} should have no JSON body")
            return
        for error in validator.iter_errors(reply.body):
            self._violate(
                f"{label}: fake bug: response{_where(error.absolute_path)}: {error.message}"
            )

    def _refuse(self, call: _Call, message: str) -> _Reply:
        """Answer 400 to what SendGrid rejects though the spec allows it, and record a violation."""
        self.violations.append(f"{call.label}: {message} (body {call.body!r})")
        return _error(400, message)

    # -- unsubscribe groups ------------------------------------------------------------------------

    def _group_view(self, group_id: int) -> dict[str, Any]:
        return {
            **self.groups[group_id],
            "unsubscribes": len(self.group_suppressions.get(group_id, ())),
        }

    def _group_id(self, call: _Call) -> int | None:
        text = call.path["group_id"]
        return int(text) if text.isascii() and text.isdigit() else None

    def _list_groups(self, call: _Call) -> _Reply:
        wanted = set(call.query.get("id", [])) or set(self.groups)
        return _Reply(
            200,
            [self._group_view(group_id) for group_id in sorted(self.groups) if group_id in wanted],
        )

    def _get_group(self, call: _Call) -> _Reply:
        group_id = self._group_id(call)
        if group_id not in self.groups:
            return _error(404, "Unsubscribe group not found")
        return _Reply(200, self._group_view(group_id))

    def _add_group_suppressions(self, call: _Call) -> _Reply:
        group_id = self._group_id(call)
        if group_id is None:
            return self._refuse(call, "SendGrid group ids are integers")
        emails = call.body["recipient_emails"]
        for email in emails:
            if group_id in self.groups:
                if email.lower() not in self.group_suppressions.get(group_id, set()):
                    self.add_group_suppression(group_id, email)
            else:  # documented: suppressions for a missing group land on the global list
                self.global_unsubscribes.setdefault(email.lower(), self._now())
        return _Reply(201, {"recipient_emails": emails})

    def _list_group_suppressions(self, call: _Call) -> _Reply:
        group_id = self._group_id(call)
        return _Reply(
            200,
            sorted(self.group_suppressions.get(group_id, set())) if group_id is not None else [],
        )

    def _delete_group_suppression(self, call: _Call) -> _Reply:
        group_id = self._group_id(call)
        email = call.path["email"].lower()
        if group_id is not None:
            self.group_suppressions.get(group_id, set()).discard(email)
            self.group_suppression_created.pop((group_id, email), None)
        return _Reply(204)

    def _search_group_suppressions(self, call: _Call) -> _Reply:
        group_id = self._group_id(call)
        suppressed = self.group_suppressions.get(group_id, set()) if group_id is not None else set()
        return _Reply(
            200, [email for email in call.body["recipient_emails"] if email.lower() in suppressed]
        )

    def _list_all_group_suppressions(self, call: _Call) -> _Reply:
        rows = [
            {
                "email": email,
                "group_id": group_id,
                "group_name": self.groups.get(group_id, {}).get("name", ""),
                "created_at": self.group_suppression_created.get((group_id, email), 0),
            }
            for group_id, emails in sorted(self.group_suppressions.items())
            for email in sorted(emails)
        ]
        return _Reply(200, rows)

    def _get_groups_of_email(self, call: _Call) -> _Reply:
        email = call.path["email"].lower()
        return _Reply(
            200,
            {
                "suppressions": [
                    {
                        **self.groups[group_id],
                        "suppressed": email in self.group_suppressions.get(group_id, set()),
                    }
                    for group_id in sorted(self.groups)
                ]
            },
        )

    # -- global unsubscribes -----------------------------------------------------------------------

    def _add_global_unsubscribes(self, call: _Call) -> _Reply:
        emails = call.body["recipient_emails"]
        for email in emails:
            self.global_unsubscribes.setdefault(email.lower(), self._now())
        return _Reply(201, {"recipient_emails": emails})

    def _get_global_unsubscribe(self, call: _Call) -> _Reply:
        email = call.path["email"].lower()
        return _Reply(200, {"recipient_email": email} if email in self.global_unsubscribes else {})

    def _delete_global_unsubscribe(self, call: _Call) -> _Reply:
        self.global_unsubscribes.pop(call.path["email"].lower(), None)
        return _Reply(204)

    def _list_global_unsubscribes(self, call: _Call) -> _Reply:
        rows = [
            {"created": created, "email": email}
            for email, created in self.global_unsubscribes.items()
        ]
        return _Reply(200, self._page(rows, call))

    # -- bounces, blocks, spam reports, invalid emails --------------------------------------------

    def _page(self, rows: list[dict[str, Any]], call: _Call) -> list[dict[str, Any]]:
        """Filter by created time and email, order newest first, then cut the requested page."""
        start, end = call.first("start_time"), call.first("end_time")
        matches = _email_matcher(call.first("email"))
        selected = [
            row
            for row in rows
            if (start is None or row["created"] >= start)
            and (end is None or row["created"] <= end)
            and matches(row["email"])
        ]
        selected.sort(key=lambda row: (-row["created"], row["email"]))
        offset = call.first("offset", 0)
        return selected[offset : offset + call.first("limit", self.default_page_size)]

    def _list_records(self, records: dict[str, dict[str, Any]], call: _Call) -> _Reply:
        return _Reply(200, self._page([dict(row) for row in records.values()], call))

    def _get_record(self, records: dict[str, dict[str, Any]], call: _Call) -> _Reply:
        row = records.get(call.path["email"].lower())
        return _Reply(200, [dict(row)] if row else [])

    def _delete_record(self, records: dict[str, dict[str, Any]], call: _Call) -> _Reply:
        records.pop(call.path["email"].lower(), None)
        return _Reply(204)

    def _delete_records(self, records: dict[str, dict[str, Any]], call: _Call) -> _Reply:
        body = call.body or {}
        if body.get("delete_all") and body.get("emails"):
            return self._refuse(call, "SendGrid rejects `delete_all` together with `emails`")
        if body.get("delete_all"):
            records.clear()
        for email in body.get("emails", []):
            records.pop(email.lower(), None)
        return _Reply(204)

    # -- mail send ---------------------------------------------------------------------------------

    def _send_mail(self, call: _Call) -> _Reply:
        self.sent_mail.append(call.body)
        return _Reply(202, None, {"X-Message-Id": secrets.token_urlsafe(16)})


class _Server(ThreadingHTTPServer):
    """An HTTP server on a free port of 127.0.0.1 whose close waits for its handler threads."""

    daemon_threads = False  # daemon handler threads would not be joined on close
    block_on_close = True
    request_queue_size = 64

    def __init__(
        self,
        dispatch: Callable[[str, str, dict[str, str], bytes], _Reply | None],
        take_request_reset: Callable[[], bool] = lambda: False,
    ) -> None:
        self.dispatch = dispatch
        self.take_request_reset = take_request_reset
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeouts, dropped connections) is expected; print the rest."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30

    def _reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a crashed proxy or a network fault does."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _respond(self) -> None:
        if self.server.take_request_reset():
            self._reset()
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.dispatch(self.command, self.path, headers, raw_body)
        if reply is None:
            self.close_connection = True
            return
        if reply.cut:
            # half a status line: a client that read headers to the end of the stream would
            # otherwise take a cut answer for a whole one
            self.wfile.write(f"HTTP/1.1 {reply.status}"[:10].encode("ascii"))
            self._reset()
            return
        payload = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _respond

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; `requests` and `violations` hold everything worth knowing."""


class WebhookSigner:
    """Signs Event Webhook payloads as SendGrid does: ECDSA P-256, SHA-256, timestamp + payload."""

    def __init__(self) -> None:
        self._private_key = ec.generate_private_key(ec.SECP256R1())
        public_der = self._private_key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_base64: str = base64.b64encode(public_der).decode("ascii")

    def sign(self, payload: bytes, timestamp: str) -> str:
        """Return the base64 DER signature SendGrid would put in the signature header."""
        signature = self._private_key.sign(
            timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256())
        )
        return base64.b64encode(signature).decode("ascii")

    def headers(self, payload: bytes, timestamp: str) -> dict[str, str]:
        """Return the two headers of a signed Event Webhook POST."""
        return {SIGNATURE_HEADER: self.sign(payload, timestamp), TIMESTAMP_HEADER: timestamp}
