"""Staff accounts for the staff pages."""

from __future__ import annotations

import click

from consent_service import runtime
from consent_service.cli.common import ServiceGroup
from consent_service.extensions import db

staff = ServiceGroup("staff", help="Staff accounts for the staff pages.")


@staff.command("create")
@click.argument("email")
@click.option("--role", required=True, help="admin, staff or marketing.")
@click.option("--generate-password", is_flag=True,
              help="Make a password and show it once, instead of asking for one.")
def staff_create(email: str, role: str, generate_password: bool) -> None:
    """Create a staff account; the password is asked twice (or generated and shown once)."""
    from consent_service.services.staff_accounts import create_staff
    from consent_service.services.staff_accounts import generate_password as make

    password = make() if generate_password else click.prompt(
        "Password (at least 12 characters)", hide_input=True, confirmation_prompt=True)
    member = create_staff(db.session, email, role, password, now=runtime.now())
    click.echo(f"staff account {member.email} created, role {member.role.value}")
    if generate_password:
        click.echo(f"password (shown once): {password}")
