"""Helpers for the staff tests: accounts, and signing in as a browser does."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from consent_service.services.staff_accounts import StaffMember, create_staff
from tests.conftest import NOW
from tests.integration.public_pages import csrf_token

PASSWORD = "correct horse battery staple"


def make_staff(session: Session, role: str, email: str | None = None) -> StaffMember:
    return create_staff(session, email or f"{role}@library.example.org", role, PASSWORD, now=NOW)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD, *, next_path: str = ""):  # type: ignore[no-untyped-def]
    """Open the sign-in page and post the form with its CSRF token."""
    url = "/staff/login" + (f"?next={next_path}" if next_path else "")
    page = client.get(url)
    return client.post(url, data={"csrf_token": csrf_token(page.text), "email": email,
                                  "password": password}, buffered=True)
