"""The marketing team's pages: counts before an export, the weekly movement, the download, past
exports and, for vendor exports, who withdrew since. Never an individual's consent history."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, render_template, request, stream_with_context
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from flask_login import current_user

from consent_service import runtime
from consent_service.domain.eligibility import Reason
from consent_service.domain.export_formats import UnknownExportFormatError
from consent_service.domain.purposes import Channel, UnknownPurposeError
from consent_service.domain.staff import Permission
from consent_service.extensions import db
from consent_service.services.decisions import UnknownTopicError
from consent_service.services.disclosures import (
    NotSentToVendorError,
    UnknownExportError,
    export_topics,
    recent_exports,
    weekly_movement,
    withdrawal_lines,
    withdrawn_since,
)
from consent_service.services.export import preview_contacts, stream_contacts
from consent_service.web.charts import ELIGIBLE, LEFT_OUT, horizontal_bars, movement_chart
from consent_service.web.staff import staff_page, staff_required
from consent_service.web.staff_words import SOURCE_WORDS

bp = Blueprint("staff_marketing", __name__, url_prefix="/staff/marketing")
staff_page("staff_marketing.exports", "Exports and counts", Permission.EXPORT_CONTACTS)

REASON_WORDS: dict[str, str] = {
    Reason.INACTIVE: "Card inactive",
    Reason.NO_EMAIL: "No email address",
    Reason.NO_POSTAL_ADDRESS: "No complete postal address",
    Reason.ADDRESS_UNDELIVERABLE: "Email address undeliverable (bounced)",
    Reason.ADDRESS_SUPPRESSED: "Email address reported our mail as spam",
    Reason.OPTED_OUT: "Said no (opted out)",
    Reason.GUARDIAN_CONSENT_REQUIRED: "Child without a guardian's consent",
    Reason.NOT_OPTED_IN: "Has not said yes (an opt-in purpose)",
}


# The mailing tools a download can be shaped for (domain/export_formats.py), as staff know them.
FORMAT_WORDS = {
    "generic": "This service's columns",
    "mailchimp": "Mailchimp",
    "constant_contact": "Constant Contact",
    "sendgrid": "SendGrid Marketing Campaigns",
    "libraryaware": "LibraryAware",
}


def _chosen() -> tuple[str, str | None]:
    return (request.values.get("purpose", "").strip(),
            request.values.get("topic", "").strip() or None)


@bp.get("/exports")
@staff_required(Permission.EXPORT_CONTACTS)
def exports() -> ResponseReturnValue:
    """Choose a purpose and topic (a GET form). With one chosen: how many are eligible and how many
    are left out by reason, the weekly movement of opt-ins and opt-outs by source, and the download
    button. Always: the past exports, with their manifests."""
    ctx = runtime.context()
    purpose, topic = _chosen()
    preview = movement = error = None
    if purpose:
        now, chunk_size = runtime.now(), current_app.config["EXPORT_CHUNK_SIZE"]
        try:
            preview = preview_contacts(db.session, ctx, purpose=purpose, topic=topic, now=now,
                                       chunk_size=chunk_size)
            movement = weekly_movement(db.session, ctx, purpose=purpose, topic=topic, now=now)
        except (UnknownPurposeError, UnknownTopicError) as exc:
            error = str(exc)[:1].upper() + str(exc)[1:] + "."
    charts = {}
    if preview is not None and movement is not None:
        counts = horizontal_bars(
            [("Eligible patrons", preview.eligible, ELIGIBLE)]
            + [(REASON_WORDS[reason], preview.left_out[reason], LEFT_OUT)
               for reason in _in_check_order(preview.left_out)])
        charts = {
            "counts_chart": counts,
            "counts_description": "; ".join(f"{bar.label}: {bar.value}" for bar in counts.bars)
            + ". The table below has the same numbers.",
            "movement_chart": movement_chart(
                [(week.starts, week.opt_ins, week.opt_outs) for week in movement], SOURCE_WORDS),
        }
    topics = export_topics(db.session)
    page = render_template(
        "staff/marketing/exports.html", purposes=list(ctx.catalog), topics=topics,
        topic_names=dict(topics), chosen_purpose=purpose, chosen_topic=topic, error=error,
        preview=preview, left_out_reasons=_in_check_order(preview.left_out) if preview else [],
        movement=movement, **charts, exports=recent_exports(db.session),
        purpose_labels={p.key: p.label for p in ctx.catalog}, reason_words=REASON_WORDS,
        format_words=FORMAT_WORDS if preview is not None and ctx.catalog.get(
            preview.purpose).channel is Channel.EMAIL else {},
        source_words=SOURCE_WORDS, local_time=_local_time)
    return page, 400 if error else 200


@bp.post("/exports/download")
@staff_required(Permission.EXPORT_CONTACTS)
def download() -> ResponseReturnValue:
    """The contact CSV, streamed as it is written (the same rules and columns as `export
    contacts`, in the mailing tool's columns chosen), and recorded as an export by the signed-in
    member."""
    purpose, topic = _chosen()
    try:
        streamed = stream_contacts(db.session, runtime.context(), purpose=purpose, topic=topic,
                                   created_by=current_user.email, now=runtime.now(),
                                   chunk_size=current_app.config["EXPORT_CHUNK_SIZE"],
                                   file_format=request.form.get("format", "generic"))
    except (UnknownPurposeError, UnknownTopicError, UnknownExportFormatError):
        abort(400)
    return Response(stream_with_context(streamed.chunks), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{streamed.file_name}"'})


@bp.get("/exports/<int:export_id>/withdrawals")
@staff_required(Permission.EXPORT_CONTACTS)
def withdrawals(export_id: int) -> ResponseReturnValue:
    """The patrons in a vendor export's file who have withdrawn since, so the vendor can be asked
    to delete them (404 for an unknown export or one that went to no vendor)."""
    try:
        found = withdrawn_since(db.session, export_id)
    except (UnknownExportError, NotSentToVendorError):
        abort(404)
    purpose_label = runtime.context().catalog.get(found.export.purpose).label
    return render_template("staff/marketing/withdrawals.html", found=found,
                           purpose_label=purpose_label, source_words=SOURCE_WORDS,
                           local_time=_local_time)


@bp.get("/exports/<int:export_id>/withdrawals.csv")
@staff_required(Permission.EXPORT_CONTACTS)
def withdrawals_csv(export_id: int) -> ResponseReturnValue:
    """The same list as CSV (the columns of `export withdrawals`)."""
    try:
        found = withdrawn_since(db.session, export_id)
    except (UnknownExportError, NotSentToVendorError):
        abort(404)
    return Response(
        "".join(withdrawal_lines(found.withdrawals)), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="withdrawals-export-{export_id}.csv"'})


def _in_check_order(left_out: dict[str, int]) -> list[str]:
    """The reasons given, in the order eligibility checks them (inactive first)."""
    return [reason.value for reason in Reason if reason.value in left_out]


def _local_time(at: datetime) -> str:
    """A time as the library's staff read it: their own zone, to the minute."""
    return at.astimezone(ZoneInfo(runtime.context().timezone)).strftime("%Y-%m-%d %H:%M %Z")
