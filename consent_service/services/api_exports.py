"""The API's contact export: `export_contacts` written to a private temporary file, then streamed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from consent_service.services.context import ServiceContext
from consent_service.services.export import export_contacts

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class ContactsFile:
    """A finished export waiting to be sent: its manifest's numbers, and the file, which is removed
    once read to the end or when the reader stops (the client went away)."""

    path: Path
    download_name: str
    manifest_id: int
    row_count: int
    sha256: str

    def chunks(self) -> Iterator[bytes]:
        try:
            with self.path.open("rb") as handle:
                while chunk := handle.read(READ_SIZE):
                    yield chunk
        finally:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def export_contacts_file(session: Session, ctx: ServiceContext, *, purpose: str,
                         topic: str | None, created_by: str, now: datetime,
                         chunk_size: int) -> ContactsFile:
    """Run the one contact export (`export_contacts`: the same CSV, rules and committed manifest as
    `flask export contacts`) into a private temporary directory, so that a response can stream it
    with flat memory and the manifest's SHA-256 holds for the bytes sent.

    :raise UnknownPurposeError: for a purpose that is not in the catalog.
    :raise UnknownTopicError: for a topic on a purpose without topics, or one not configured.
    """
    directory = Path(tempfile.mkdtemp(prefix="consent-export-"))
    path = directory / "contacts.csv"
    try:
        manifest = export_contacts(session, ctx, purpose=purpose, topic=topic, output=path,
                                   excluded=None, created_by=created_by, now=now,
                                   chunk_size=chunk_size)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    name = "-".join(part for part in ("contacts", manifest.purpose, manifest.topic,
                                      ctx.today(now).isoformat()) if part)
    return ContactsFile(path, f"{name}.csv", manifest.id, manifest.row_count, manifest.sha256)
