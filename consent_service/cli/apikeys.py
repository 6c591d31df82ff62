"""API keys for other systems (the ILS, the mailing tool): create, list, revoke."""

from __future__ import annotations

from datetime import datetime

import click

from consent_service import runtime
from consent_service.cli.common import ServiceGroup
from consent_service.extensions import db

apikeys = ServiceGroup("apikeys", help="API keys for other systems (REST API at /api/v1).")


@apikeys.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="patrons:write, consents:read, consents:write or exports:read; repeat for more.")
def apikeys_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key with these scopes and print it once: only its hash is kept."""
    from consent_service.services.api_keys import create_api_key

    info, key = create_api_key(db.session, name, scopes, now=runtime.now())
    click.echo(f"API key {info.name!r} created ({info.prefix}…), scopes: {' '.join(info.scopes)}",
               err=True)
    click.echo("the key is shown only now; send it as `Authorization: Bearer KEY`:", err=True)
    click.echo(key)


@apikeys.command("list")
def apikeys_list() -> None:
    """Every key: name, prefix, scopes, when created, last used and revoked."""
    from consent_service.services.api_keys import list_api_keys

    keys = list_api_keys(db.session)
    if not keys:
        click.echo("no API keys yet (create one with `apikeys create NAME --scope S`)")
        return
    rows = [("name", "prefix", "scopes", "created", "last used", "revoked")]
    rows += [(k.name, k.prefix, " ".join(k.scopes), _when(k.created_at), _when(k.last_used_at),
              _when(k.revoked_at)) for k in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


@apikeys.command("revoke")
@click.argument("name_or_prefix")
def apikeys_revoke(name_or_prefix: str) -> None:
    """Revoke a key by its name or its prefix; it is refused from the next request on."""
    from consent_service.services.api_keys import revoke_api_key

    info, revoked_now = revoke_api_key(db.session, name_or_prefix, now=runtime.now())
    if revoked_now:
        click.echo(f"API key {info.name!r} ({info.prefix}…) revoked")
    else:
        click.echo(f"API key {info.name!r} ({info.prefix}…) was revoked already, "
                   f"at {_when(info.revoked_at)}")


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "-"
