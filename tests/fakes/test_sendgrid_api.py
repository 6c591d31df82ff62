"""Behaviour of the fake SendGrid server, driven through the official client and raw urllib."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    InternalServerError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import Mail

from .sendgrid_api import SIGNATURE_HEADER, TIMESTAMP_HEADER, FakeSendGrid, WebhookSigner

GROUP_ID = 4242
NOW = 1_700_000_000


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    """A running fake that fails the test on any violation a test did not take on purpose."""
    with FakeSendGrid(api_key="test-key") as server:
        server.clock = lambda: NOW
        yield server
        assert server.violations == []


@pytest.fixture
def sg(fake: FakeSendGrid) -> SendGridAPIClient:
    return SendGridAPIClient(api_key="test-key", host=fake.url)


def raw_request(
    fake: FakeSendGrid,
    method: str,
    path: str,
    body: Any = None,
    authorization: str | None = "Bearer test-key",
) -> tuple[int, Any]:
    """Send one request with urllib and return the status and decoded JSON body."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    data = None if body is None else json.dumps(body).encode()
    url = fake.url + path
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def test_group_suppression_round_trip(fake: FakeSendGrid, sg: SendGridAPIClient) -> None:
    fake.add_group(GROUP_ID, "Library newsletter")
    group = sg.client.asm.groups._(GROUP_ID)

    added = group.suppressions.post(request_body={"recipient_emails": ["Reader@Example.com"]})
    assert added.status_code == 201
    assert added.to_dict == {"recipient_emails": ["Reader@Example.com"]}
    assert fake.group_suppressions == {GROUP_ID: {"reader@example.com"}}
    assert group.suppressions.get().to_dict == ["reader@example.com"]
    assert sg.client.asm.suppressions.get().to_dict == [
        {
            "email": "reader@example.com",
            "group_id": GROUP_ID,
            "group_name": "Library newsletter",
            "created_at": NOW,
        }
    ]

    removed = group.suppressions._("reader@example.com").delete()
    assert removed.status_code == 204
    assert group.suppressions.get().to_dict == []
    assert fake.group_suppressions == {GROUP_ID: set()}


def test_search_returns_only_suppressed_addresses(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_group(GROUP_ID, "Events")
    fake.add_group_suppression(GROUP_ID, "gone@example.com")

    found = sg.client.asm.groups._(GROUP_ID).suppressions.search.post(
        request_body={"recipient_emails": ["gone@example.com", "here@example.com"]}
    )

    assert found.to_dict == ["gone@example.com"]


def test_suppressing_into_a_missing_group_unsubscribes_globally(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    sg.client.asm.groups._(999).suppressions.post(
        request_body={"recipient_emails": ["x@example.com"]}
    )

    assert fake.group_suppressions == {}
    assert fake.global_unsubscribes == {"x@example.com": NOW}


def test_groups_are_listed_with_their_unsubscribe_counts(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_group(1, "Overdue notices", "Reminders")
    fake.add_group(2, "Events")
    fake.add_group_suppression(2, "a@example.com")

    assert sg.client.asm.groups.get().to_dict == [
        {
            "id": 1,
            "name": "Overdue notices",
            "description": "Reminders",
            "is_default": False,
            "unsubscribes": 0,
        },
        {"id": 2, "name": "Events", "description": "", "is_default": False, "unsubscribes": 1},
    ]
    assert [group["id"] for group in sg.client.asm.groups.get(query_params={"id": 2}).to_dict] == [
        2
    ]


def test_global_unsubscribe_round_trip(fake: FakeSendGrid, sg: SendGridAPIClient) -> None:
    global_list = sg.client.asm.suppressions._("global")

    added = global_list.post(request_body={"recipient_emails": ["Patron@Example.com"]})
    assert added.status_code == 201
    assert fake.global_unsubscribes == {"patron@example.com": NOW}
    assert global_list._("patron@example.com").get().to_dict == {
        "recipient_email": "patron@example.com"
    }
    assert sg.client.suppression.unsubscribes.get().to_dict == [
        {"created": NOW, "email": "patron@example.com"}
    ]

    assert global_list._("patron@example.com").delete().status_code == 204
    assert global_list._("patron@example.com").get().to_dict == {}
    assert fake.global_unsubscribes == {}


def test_unsubscribes_page_through_three_pages(fake: FakeSendGrid, sg: SendGridAPIClient) -> None:
    for index in range(25):
        fake.add_global_unsubscribe(f"reader{index:02}@example.com", created=NOW + index)

    pages = [
        sg.client.suppression.unsubscribes.get(query_params={"limit": 10, "offset": offset}).to_dict
        for offset in (0, 10, 20, 30)
    ]

    assert [len(page) for page in pages] == [10, 10, 5, 0]
    seen = [row["email"] for page in pages for row in page]
    assert sorted(seen) == sorted(fake.global_unsubscribes)
    assert seen[0] == "reader24@example.com", "newest first"


def test_unsubscribes_filter_on_created_time_and_email(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_global_unsubscribe("old@example.com", created=NOW - 100)
    fake.add_global_unsubscribe("new@example.com", created=NOW)
    fake.add_global_unsubscribe("news-desk@example.com", created=NOW + 5)

    def emails(query: dict[str, Any]) -> list[str]:
        return [
            row["email"]
            for row in sg.client.suppression.unsubscribes.get(query_params=query).to_dict
        ]

    assert emails({"start_time": NOW, "end_time": NOW + 5}) == [
        "news-desk@example.com",
        "new@example.com",
    ]
    assert emails({"end_time": NOW - 1}) == ["old@example.com"]
    assert emails({"email": "new"}) == ["news-desk@example.com", "new@example.com"]
    assert emails({"email": "%desk"}) == ["news-desk@example.com"]


def test_spam_reports_and_bounces_are_listed_and_deleted(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_spam_report("spam@example.com", created=NOW, ip="10.0.0.1")
    fake.add_bounce("bounce@example.com", created=NOW, reason="550 no such user", status="5.1.1")

    assert sg.client.suppression.spam_reports.get().to_dict == [
        {"created": NOW, "email": "spam@example.com", "ip": "10.0.0.1"}
    ]
    assert sg.client.suppression.bounces.get(query_params={"limit": 1}).to_dict == [
        {
            "created": NOW,
            "email": "bounce@example.com",
            "reason": "550 no such user",
            "status": "5.1.1",
        }
    ]

    assert sg.client.suppression.spam_reports._("spam@example.com").delete().status_code == 204
    assert sg.client.suppression.bounces._("bounce@example.com").delete().status_code == 204
    assert fake.spam_reports == {}
    assert fake.bounces == {}


@pytest.mark.parametrize(
    ("list_name", "seed"),
    [
        ("bounces", FakeSendGrid.add_bounce),
        ("blocks", FakeSendGrid.add_block),
        ("spam_reports", FakeSendGrid.add_spam_report),
        ("invalid_emails", FakeSendGrid.add_invalid_email),
    ],
)
def test_each_suppression_list_supports_lookup_and_bulk_delete(
    fake: FakeSendGrid, sg: SendGridAPIClient, list_name: str, seed: Callable[..., None]
) -> None:
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        seed(fake, email, created=NOW)
    endpoint = sg.client.suppression._(list_name)

    [row] = endpoint._("a@example.com").get().to_dict
    assert row["email"] == "a@example.com"
    assert endpoint._("nobody@example.com").get().to_dict == []

    assert endpoint.delete(request_body={"emails": ["a@example.com"]}).status_code == 204
    assert sorted(getattr(fake, list_name)) == ["b@example.com", "c@example.com"]
    assert endpoint.delete(request_body={"delete_all": True}).status_code == 204
    assert getattr(fake, list_name) == {}


def test_bulk_delete_with_both_delete_all_and_emails_is_refused(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_bounce("a@example.com")

    with pytest.raises(BadRequestsError):
        sg.client.suppression.bounces.delete(
            request_body={"delete_all": True, "emails": ["a@example.com"]}
        )

    assert list(fake.bounces) == ["a@example.com"]
    [violation] = fake.take_violations()
    assert "delete_all" in violation


def test_a_single_group_is_returned_and_a_missing_one_is_not_found(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_group(GROUP_ID, "Events", "Talks and readings")
    fake.add_group_suppression(GROUP_ID, "a@example.com")

    assert sg.client.asm.groups._(GROUP_ID).get().to_dict == {
        "id": GROUP_ID,
        "name": "Events",
        "description": "Talks and readings",
        "is_default": False,
        "unsubscribes": 1,
    }
    with pytest.raises(NotFoundError):
        sg.client.asm.groups._(GROUP_ID + 1).get()


def test_concurrent_calls_are_all_applied(fake: FakeSendGrid) -> None:
    fake.add_group(GROUP_ID, "Events")

    def suppress(index: int) -> int:
        client = SendGridAPIClient(api_key="test-key", host=fake.url)
        group = client.client.asm.groups._(GROUP_ID)
        return group.suppressions.post(
            request_body={"recipient_emails": [f"reader{index}@example.com"]}
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(suppress, range(40)))

    assert statuses == [201] * 40
    assert len(fake.group_suppressions[GROUP_ID]) == 40
    assert len(fake.requests) == 40


def test_mail_send_is_accepted_with_a_message_id(fake: FakeSendGrid, sg: SendGridAPIClient) -> None:
    message = Mail(
        from_email="library@example.com",
        to_emails="reader@example.com",
        subject="Your hold is ready",
        plain_text_content="Pick it up within seven days.",
    )

    response = sg.send(message)

    assert response.status_code == 202
    assert response.body == b""
    assert response.headers["X-Message-Id"]
    assert fake.sent_mail == [message.get()]


def test_requests_are_recorded(fake: FakeSendGrid, sg: SendGridAPIClient) -> None:
    sg.client.suppression.unsubscribes.get(query_params={"limit": 5})

    [recorded] = fake.requests
    assert (recorded.method, recorded.path, recorded.query) == (
        "GET",
        "/v3/suppression/unsubscribes",
        {"limit": ["5"]},
    )
    assert recorded.json is None
    assert recorded.headers["authorization"] == "Bearer test-key"


def test_a_body_the_spec_rejects_is_refused_and_recorded(fake: FakeSendGrid) -> None:
    status, body = raw_request(
        fake, "POST", "/v3/asm/suppressions/global", {"emails": ["a@example.com"]}
    )

    assert status == 400
    assert "'recipient_emails' is a required property" in body["errors"][0]["message"]
    assert fake.global_unsubscribes == {}
    [violation] = fake.take_violations()
    assert violation.startswith("POST /v3/asm/suppressions/global (CreateGlobalSuppression)")


def test_the_official_client_sees_a_spec_violation_as_bad_request(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    with pytest.raises(BadRequestsError):
        sg.client.asm.groups._(GROUP_ID).suppressions.post(
            request_body={"recipient_emails": "a@example.com"}
        )

    [violation] = fake.take_violations()
    assert "is not of type 'array'" in violation


def test_an_unknown_path_is_recorded(fake: FakeSendGrid) -> None:
    status, _ = raw_request(fake, "GET", "/v3/asm/unsubscribes")

    assert status == 400
    assert fake.take_violations() == [
        "GET /v3/asm/unsubscribes: no operation in the spec matches the path /v3/asm/unsubscribes"
    ]


def test_a_method_the_path_does_not_allow_is_recorded(fake: FakeSendGrid) -> None:
    status, _ = raw_request(fake, "PUT", "/v3/asm/groups", {"name": "x"})

    assert status == 400
    assert fake.take_violations() == [
        "PUT /v3/asm/groups: the spec allows only GET, POST on /v3/asm/groups"
    ]


def test_query_parameters_are_checked_against_the_spec(fake: FakeSendGrid) -> None:
    too_big, _ = raw_request(fake, "GET", "/v3/suppression/unsubscribes?limit=501")
    misspelled, _ = raw_request(fake, "GET", "/v3/suppression/unsubscribes?limt=10")

    assert (too_big, misspelled) == (400, 400)
    first, second = fake.take_violations()
    assert "query parameter 'limit': 501 is greater than the maximum of 500" in first
    assert "query parameter 'limt' is not in the spec" in second


def test_a_spec_operation_the_fake_lacks_answers_501_and_is_recorded(fake: FakeSendGrid) -> None:
    status, _ = raw_request(fake, "GET", "/v3/mail_settings")

    assert status == 501
    [violation] = fake.take_violations()
    assert "the fake does not implement ListMailSetting" in violation


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "test-key"])
def test_requests_without_the_bearer_key_get_401(
    fake: FakeSendGrid, authorization: str | None
) -> None:
    status, body = raw_request(fake, "GET", "/v3/asm/groups", authorization=authorization)

    assert status == 401
    assert body == {"errors": [{"field": None, "message": "authorization required"}]}
    [violation] = fake.take_violations()
    assert "Authorization" in violation


def test_the_official_client_with_a_wrong_key_is_unauthorized(fake: FakeSendGrid) -> None:
    client = SendGridAPIClient(api_key="other-key", host=fake.url)

    with pytest.raises(UnauthorizedError):
        client.client.asm.groups.get()

    assert len(fake.take_violations()) == 1


def test_fail_next_429_has_reset_headers_and_leaves_state_unchanged(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.fail_next(1, status=429, reset_after_seconds=30)

    with pytest.raises(TooManyRequestsError) as raised:
        sg.client.asm.suppressions._("global").post(
            request_body={"recipient_emails": ["a@example.com"]}
        )

    headers = raised.value.headers
    assert headers["X-RateLimit-Limit"] == str(fake.rate_limit)
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == str(NOW + 30)
    assert fake.global_unsubscribes == {}

    retried = sg.client.asm.suppressions._("global").post(
        request_body={"recipient_emails": ["a@example.com"]}
    )
    assert retried.status_code == 201
    assert fake.global_unsubscribes == {"a@example.com": NOW}


def test_fail_next_500_refuses_without_changing_state(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_global_unsubscribe("a@example.com")
    fake.fail_next(1, status=500)

    with pytest.raises(InternalServerError):
        sg.client.asm.suppressions._("global")._("a@example.com").delete()

    assert fake.global_unsubscribes == {"a@example.com": NOW}


def test_a_dropped_connection_raises_in_the_client(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_group(GROUP_ID, "Events")
    fake.drop_next(1)

    with pytest.raises((ConnectionError, urllib.error.URLError)):
        sg.client.asm.groups._(GROUP_ID).suppressions.post(
            request_body={"recipient_emails": ["a@example.com"]}
        )

    assert fake.group_suppressions == {}
    assert sg.client.asm.groups.get().status_code == 200


@pytest.mark.parametrize("during", ["request", "response"])
def test_a_reset_connection_raises_in_the_client_and_only_a_reset_answer_was_carried_out(
    fake: FakeSendGrid, sg: SendGridAPIClient, during: str
) -> None:
    fake.add_group(GROUP_ID, "Events")
    fake.reset_next(1, during=during)

    with pytest.raises((ConnectionError, urllib.error.URLError, http.client.HTTPException)):
        sg.client.asm.groups._(GROUP_ID).suppressions.post(
            request_body={"recipient_emails": ["a@example.com"]}
        )

    carried_out = {GROUP_ID: {"a@example.com"}} if during == "response" else {}
    assert fake.group_suppressions == carried_out
    assert len(fake.requests) == (1 if during == "response" else 0)
    assert len(fake.carried_out) == len(fake.requests)
    assert sg.client.asm.groups.get().status_code == 200, "only the next request is reset"


def outcome_sequence(fake: FakeSendGrid, sg: SendGridAPIClient, seed: int) -> list[str]:
    """Make 30 calls under failure_rate(0.5, seed) and name what happened to each."""
    fake.failure_rate(0.5, seed=seed)
    outcomes = []
    for _ in range(30):
        try:
            outcomes.append(str(sg.client.asm.groups.get().status_code))
        except (TooManyRequestsError, InternalServerError) as error:
            outcomes.append(str(error.status_code))
        except (ConnectionError, urllib.error.URLError):
            outcomes.append("dropped")
    fake.failure_rate(0)
    return outcomes


def test_failure_rate_is_repeatable_from_its_seed(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    first = outcome_sequence(fake, sg, seed=7)
    second = outcome_sequence(fake, sg, seed=7)
    other = outcome_sequence(fake, sg, seed=8)

    assert first == second
    assert first != other
    assert set(first) == {"200", "429", "500", "dropped"}


def test_slow_answers_make_a_short_client_timeout_fire(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.slow(0.3)

    with pytest.raises((TimeoutError, urllib.error.URLError)):
        sg.client.asm.groups.get(timeout=0.05)


def test_reset_forgets_state_requests_and_injected_failures(
    fake: FakeSendGrid, sg: SendGridAPIClient
) -> None:
    fake.add_group(GROUP_ID, "Events")
    fake.add_global_unsubscribe("a@example.com")
    sg.client.asm.groups.get()
    fake.fail_next(3)

    fake.reset()

    assert (fake.groups, fake.global_unsubscribes, fake.requests) == ({}, {}, [])
    assert sg.client.asm.groups.get().status_code == 200


def test_signer_signature_verifies_with_the_official_helper() -> None:
    signer = WebhookSigner()
    payload = b'[{"email":"reader@example.com","event":"unsubscribe","timestamp":1700000000}]'
    timestamp = "1700000000"
    verifier = EventWebhook()
    public_key = verifier.convert_public_key_to_ecdsa(signer.public_key_base64)
    headers = signer.headers(payload, timestamp)

    assert headers[TIMESTAMP_HEADER] == timestamp
    signature = headers[SIGNATURE_HEADER]
    assert verifier.verify_signature(payload.decode(), signature, timestamp, public_key)
    assert not verifier.verify_signature(
        payload.decode().replace("unsubscribe", "open"), signature, timestamp, public_key
    )
    assert not verifier.verify_signature(payload.decode(), signature, "1700000001", public_key)


def test_the_fake_checks_calls_against_the_spec_kept_in_the_repository(tmp_path: Path) -> None:
    """A fresh clone has nothing beside it: the fake (copied alone into an empty folder) still finds
    SendGrid's documents and refuses a call they do not allow."""
    clone = tmp_path / "checkout"
    shutil.copytree(Path(__file__).parent, clone / "tests" / "fakes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import json, urllib.error, urllib.request\n"
        "from tests.fakes.sendgrid_api import FakeSendGrid\n"
        "with FakeSendGrid() as fake:\n"
        "    request = urllib.request.Request(fake.url + '/v3/asm/groups/1/suppressions', method='POST',\n"
        "        data=b'{\"emails\": []}', headers={'Authorization': 'Bearer test-key',\n"
        "                                          'Content-Type': 'application/json'})\n"
        "    try:\n"
        "        urllib.request.urlopen(request, timeout=5)\n"
        "    except urllib.error.HTTPError as error:\n"
        "        error.close()\n"
        "        print(error.code, fake.violations)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=clone, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("400 ")
    assert "recipient_emails" in done.stdout
    assert (clone / "tests" / "fakes" / "sendgrid-openapi" / "LICENSE").read_text().startswith(
        "MIT License")
