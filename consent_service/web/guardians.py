"""The guardian's pages: a consent request for a child, and every child of theirs on one page.

No login: a signed link is the key. A GET never changes anything; a POST needs the page's CSRF token.
The rules are in consent_service/services/guardians/__init__.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_babel import format_date, lazy_gettext
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length

from consent_service import runtime
from consent_service.domain.evidence import link_evidence
from consent_service.domain.guardians import (
    GuardianSettings,
    Vendor,
    VendorMethod,
)
from consent_service.domain.ledger import Actor, Decision
from consent_service.domain.purposes import VENDOR_PURPOSES, PurposeKey
from consent_service.domain.tokens import ExpiredLinkError, InvalidLinkError, LinkClaims
from consent_service.extensions import db, limiter
from consent_service.services.context import ServiceContext
from consent_service.services.guardians.choices import (
    TYPED_NAME_LIMIT,
    ChildChoices,
    Choice,
    DecisionLine,
    NotYourChildError,
    child_choices,
)
from consent_service.services.guardians.consent_request import (
    answer_guardian_request,
    guardian_page_choices,
    open_guardian_request,
)
from consent_service.services.guardians.family import (
    FAMILY_REQUEST_KINDS,
    change_family_decisions,
    family_child,
    family_children,
    open_family_link,
    request_child_data,
)
from consent_service.services.patron_data import ReceiptNotFoundError, patron_data, patron_receipt
from consent_service.services.topics import name_in
from consent_service.web.forms import SafeText
from consent_service.web.i18n import current_language, set_switch_path, use_patron_language
from consent_service.web.patron_data import data_page, json_download

bp = Blueprint("guardians", __name__)


@bp.record_once
def _check_settings(state: BlueprintSetupState) -> None:
    """Refuse to start with guardian settings the pages cannot use (a bad vendor list, say)."""
    GuardianSettings.from_config(state.app.config)


_PURPOSE_TEXT = {
    PurposeKey.CHILD_ONLINE_SERVICES: (
        lazy_gettext("Online services"),
        lazy_gettext("Using the library's online services that ask for personal information, such "
                     "as e-book and homework-help accounts.")),
    PurposeKey.CHILD_PROGRAMS: (
        lazy_gettext("Programs"),
        lazy_gettext("Collecting the child's name, age and contact details to sign them up for "
                     "programs, in person or online.")),
    PurposeKey.MINOR_CARD: (
        lazy_gettext("A library card"),
        lazy_gettext("A library card of their own: anyone under 17 needs a parent's or guardian's "
                     "permission.")),
    PurposeKey.EMAIL_MARKETING: (
        lazy_gettext("Email from the library"),
        lazy_gettext("Email about programs and events.")),
    PurposeKey.POSTAL_MARKETING: (
        lazy_gettext("Postal mail"),
        lazy_gettext("Letters and flyers about programs.")),
    PurposeKey.PHOTO_VIDEO: (
        lazy_gettext("Photos and video"),
        lazy_gettext("Appearing in photos or video the library takes at its activities to show "
                     "what it does.")),
    PurposeKey.CONTACT_UPDATE: (
        lazy_gettext("Sharing to keep contact details current"),
        lazy_gettext("Sending the child's name and address to a company that keeps them up to "
                     "date, for example after a move.")),
    PurposeKey.THIRD_PARTY_MODELING: (
        lazy_gettext("Sharing to reach more people"),
        lazy_gettext("Sending the child's data to a company that builds models to help the "
                     "library reach people who might use it.")),
}
_TOPIC_LABEL = lazy_gettext("Email about %(topic)s")
_TOPIC_TEXT = lazy_gettext("Email from the library on this topic.")


class GuardianAnswerForm(FlaskForm):
    """The guardian page's confirmation; the tick boxes are read from the `allow` values."""

    confirm = BooleanField(validators=[DataRequired(
        message=lazy_gettext("Tick this box to confirm you are the child's parent or legal "
                             "guardian."))])
    name = StringField(
        lazy_gettext("Your full name"),
        filters=[lambda value: " ".join(value.split()) if isinstance(value, str) else value],
        validators=[DataRequired(message=lazy_gettext("Type your full name.")),
                    Length(max=TYPED_NAME_LIMIT), SafeText()],
        render_kw={"autocomplete": "name", "maxlength": TYPED_NAME_LIMIT})


@dataclass(frozen=True)
class ChoiceView:
    """A tick box as a page shows it."""

    choice: Choice
    field_id: str
    label: str
    description: str
    status: str
    checked: bool


@dataclass(frozen=True)
class ChildView:
    """A child on the family page."""

    view: ChildChoices
    first_name: str
    rows: list[ChoiceView]
    vendor_rows: list[ChoiceView]
    id_check_needed: bool  # vendor sharing awaits an ID check at the desk
    teen_rows: list[ChoiceView]
    shown: str  # the form's `shown` field


def _evidence(claims: LinkClaims) -> dict[str, str]:
    return link_evidence(request.remote_addr, request.user_agent.string, claims.token_id)


def _first_name(first_name: str) -> str:
    return first_name or _("your child")


def _label(choice: Choice) -> tuple[str, str]:
    if choice.topic_names:
        topic = name_in(choice.topic_names, current_language())
        return _TOPIC_LABEL % {"topic": topic}, str(_TOPIC_TEXT)
    label, description = _PURPOSE_TEXT[choice.purpose]
    return str(label), str(description)


def _status(choice: Choice, *, guardian_decides: bool) -> str:
    """What is in force: for a guardian's choice, whether a guardian allowed it; for a teen's own,
    what eligibility says."""
    allowed = choice.given if guardian_decides else choice.allowed
    text = _("Allowed") if allowed else _("Not allowed")
    if choice.ruling is None:
        return text if not guardian_decides else _("Not allowed: nobody has decided yet")
    status = _("%(status)s since %(date)s", status=text,
               date=format_date(choice.ruling.occurred_at, format="long"))
    if not guardian_decides and choice.ruling.actor is Actor.GUARDIAN:
        return _("%(status)s (decided by a parent or guardian)", status=status)
    return status


def _rows(choices: Sequence[Choice], prefix: str, *, guardian_decides: bool,
          ticked: Collection[str] | None = None) -> list[ChoiceView]:
    """Views of tick boxes: a box is ticked when a guardian's opt-in is in force, or, given
    `ticked` (a form posted back with an error), as the guardian left it."""
    views = []
    for choice in choices:
        label, description = _label(choice)
        checked = choice.given if ticked is None else choice.key in ticked
        views.append(ChoiceView(
            choice, f"{prefix}-{choice.key.replace(':', '-')}", label, description,
            _status(choice, guardian_decides=guardian_decides), checked))
    return views


def _shown(rows: Sequence[ChoiceView]) -> str:
    """The form's `shown` field: the boxes the page shows ticked, so that saving records only what
    the guardian changed on this page (see services/guardians/__init__.py)."""
    return " ".join(row.choice.key for row in rows if row.checked)


def _posted_shown() -> set[str] | None:
    """What the posted page showed ticked; None for a form without the `shown` field."""
    shown = request.form.get("shown")
    return None if shown is None else set(shown.split())


def _vendors(ctx: ServiceContext) -> dict[str, list[Vendor]]:
    return {purpose: ctx.guardians.vendors_for(purpose) for purpose in VENDOR_PURPOSES}


def _decision_text(line: DecisionLine) -> dict[str, str]:
    label = (_TOPIC_LABEL % {"topic": name_in(line.topic_names, current_language())}
             if line.topic_names else str(_PURPOSE_TEXT[line.purpose][0]))
    allowed = line.decision is Decision.OPT_IN
    return {"label": label, "decision": _("Allowed") if allowed else _("Not allowed")}


@bp.errorhandler(InvalidLinkError)
def bad_link(error: InvalidLinkError) -> ResponseReturnValue:
    """A tampered, expired or wrong-kind link, or an expired request: 400, nothing recorded."""
    return render_template("guardians/link_problem.html",
                           expired=isinstance(error, ExpiredLinkError)), 400


@bp.route("/guardian/<token>", methods=["GET", "POST"])
def guardian_request(token: str) -> ResponseReturnValue:
    """GET: the request for the guardian's consent: the child by first name, each purpose with a
    one-line explanation and a box ticked when a guardian's opt-in is in force, vendor sharing
    apart, the confirmation and the typed name. POST: records what the guardian changed (see
    answer_guardian_request) and shows what is now in force; a missing confirmation or name gives
    the form again (400) and records nothing."""
    ctx = runtime.context()
    now = runtime.now()
    opened = open_guardian_request(db.session, ctx, token, now=now)
    use_patron_language(opened.request.language)
    set_switch_path(url_for("guardians.guardian_request", token=token))
    child_name = _first_name(opened.child.first_name)
    form = GuardianAnswerForm()
    form.confirm.label.text = _("I am %(child)s's parent or legal guardian", child=child_name)
    view = child_choices(db.session, ctx, opened.child, now=now)
    choices = guardian_page_choices(ctx, view)
    status = 200
    if request.method == "POST" and choices:
        if form.validate():
            lines = answer_guardian_request(
                db.session, ctx, opened, set(request.form.getlist("allow")), _posted_shown(),
                typed_name=form.name.data or "", confirmed=bool(form.confirm.data),
                evidence=_evidence(opened.claims), now=now)
            return render_template("guardians/answered.html", child_name=child_name,
                                   decisions=[_decision_text(line) for line in lines],
                                   masked_email=opened.masked_email)
        status = 400
    answered = opened.request.status == "answered"
    if status == 400:  # the form again, as the guardian left it and against what it first showed
        rows = _rows(choices, "allow", guardian_decides=True,
                     ticked=set(request.form.getlist("allow")))
        shown = request.form.get("shown", "")
    else:
        rows = _rows(choices, "allow", guardian_decides=True)
        shown = _shown(rows)
    return render_template(
        "guardians/request.html", opened=opened, child_name=child_name, view=view, form=form,
        rows=[row for row in rows if not row.choice.vendor],
        vendor_rows=[row for row in rows if row.choice.vendor], shown=shown,
        vendors=_vendors(ctx),
        id_check=ctx.guardians.vendor_method is VendorMethod.ID_CHECK and view.under_13,
        answered_at=opened.request.answered_at if answered else None,
        policy_url=ctx.guardians.policy_url, invalid=status == 400,
    ), status


@bp.route("/family/<token>", methods=["GET", "POST"])
def family(token: str) -> ResponseReturnValue:
    """GET: every child linked to this guardian, their decisions in force, a form per child to
    change or withdraw them, a link to each child's data, and a request for a child's erasure.
    POST (`action` decide or erasure, and the `child`'s public id): records the change or files
    the request, then shows the page with what was done. A child who is not this guardian's is refused
    with 404 and nothing is recorded.

    :raise 400: for an unknown action.
    :raise 404: for a child not linked to this guardian.
    """
    ctx = runtime.context()
    now = runtime.now()
    opened = open_family_link(db.session, ctx, token, now=now)
    use_patron_language(opened.language)
    set_switch_path(url_for("guardians.family", token=token))
    saved: dict[str, Any] | None = None
    asked: dict[str, Any] | None = None
    if request.method == "POST":
        action, child_id = request.form.get("action", ""), request.form.get("child", "")
        if action != "decide" and action not in FAMILY_REQUEST_KINDS:
            abort(400)
        try:
            if action == "decide":
                child, lines = change_family_decisions(
                    db.session, ctx, opened, child_id, set(request.form.getlist("allow")),
                    _posted_shown(), evidence=_evidence(opened.claims), now=now)
                saved = {"child_name": _first_name(child.first_name),
                         "decisions": [_decision_text(line) for line in lines]}
            else:
                child, _task, new = request_child_data(db.session, ctx, opened, child_id, action,
                                                      now=now)
                asked = {"child_name": _first_name(child.first_name), "kind": action, "new": new}
        except NotYourChildError:
            abort(404)
    children = []
    separate_tick = ctx.guardians.vendor_method is VendorMethod.SEPARATE_TICK
    for view in family_children(db.session, ctx, opened, now=now):
        prefix = f"{view.child.public_id}-allow"
        rows = _rows([choice for choice in view.choices if choice.offered], prefix,
                     guardian_decides=True)
        children.append(ChildView(
            view, _first_name(view.child.first_name),
            rows=[row for row in rows if not row.choice.vendor],
            vendor_rows=[row for row in rows if row.choice.vendor],
            id_check_needed=not separate_tick and any(c.vendor and not c.offered
                                                      for c in view.choices),
            teen_rows=_rows(view.teen_decides, f"{view.child.public_id}-teen",
                            guardian_decides=False), shown=_shown(rows)))
    return render_template("guardians/family.html", family=opened, children=children,
                           saved=saved, asked=asked, vendors=_vendors(ctx),
                           policy_url=ctx.guardians.policy_url, token=token)


def _download_limit() -> str:
    return str(current_app.config["DATA_DOWNLOAD_LIMIT_PER_CLIENT"])


def _open_child(token: str, child: str) -> tuple[ServiceContext, Any, Any]:
    """The family link's context, the verified family and the child of theirs, or 404."""
    ctx = runtime.context()
    opened = open_family_link(db.session, ctx, token, now=runtime.now())
    try:
        return ctx, opened, family_child(db.session, opened, child)
    except NotYourChildError:
        abort(404)


@bp.get("/family/<token>/children/<child>/data")
@limiter.limit(_download_limit)
def child_data(token: str, child: str) -> ResponseReturnValue:
    """Everything the service holds about one of the guardian's children, as a readable page with
    a JSON download and the child's consent receipts (services.patron_data: nothing about anyone
    else, the guardian's own evidence included). Reads only.

    :raise 404: for a child not linked to this guardian.
    """
    ctx, opened, patron = _open_child(token, child)
    use_patron_language(opened.language)
    set_switch_path(url_for("guardians.child_data", token=token, child=child))
    return data_page(
        patron_data(db.session, ctx, patron, now=runtime.now()),
        title=_("%(child)s's data", child=_first_name(patron.first_name)),
        json_url=url_for("guardians.child_data_json", token=token, child=child),
        receipt_url=lambda receipt: url_for("guardians.child_receipt", token=token, child=child,
                                            receipt=receipt),
        back_url=url_for("guardians.family", token=token))


@bp.get("/family/<token>/children/<child>/data.json")
@limiter.limit(_download_limit)
def child_data_json(token: str, child: str) -> ResponseReturnValue:
    """The same as a JSON file (an attachment).

    :raise 404: for a child not linked to this guardian.
    """
    ctx, _opened, patron = _open_child(token, child)
    return json_download(patron_data(db.session, ctx, patron, now=runtime.now()),
                         f"library-data-{patron.public_id}.json")


@bp.get("/family/<token>/children/<child>/receipts/<receipt>.json")
@limiter.limit(_download_limit)
def child_receipt(token: str, child: str, receipt: str) -> ResponseReturnValue:
    """The consent receipt of one event on the child's record, as a JSON file.

    :raise 404: for a child not linked to this guardian, or an event not on the child's record.
    """
    ctx, _opened, patron = _open_child(token, child)
    try:
        found = patron_receipt(db.session, ctx, patron, receipt, now=runtime.now())
    except ReceiptNotFoundError:
        abort(404)
    return json_download(found, f"consent-receipt-{receipt}.json")
