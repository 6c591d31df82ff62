"""The patron's pages: unsubscribe (and RFC 8058 one-click), preference center, "email me a link".

No login: a signed link is the key. A GET or HEAD never changes anything, with one exception: a
`Sec-GPC: 1` request to the preference center (see `preferences`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import force_locale, format_date, lazy_gettext
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, Field, RadioField, SelectChoice, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length

from consent_service import runtime
from consent_service.domain.addresses import InvalidEmailError, normalize_email
from consent_service.domain.eligibility import Reason
from consent_service.domain.evidence import link_evidence
from consent_service.domain.ledger import Decision, Source
from consent_service.domain.purposes import Channel, PurposeKey
from consent_service.domain.tokens import ExpiredLinkError, InvalidLinkError, LinkClaims, LinkKind
from consent_service.extensions import csrf, db, limiter
from consent_service.services.erasure import ErasureError, request_erasure
from consent_service.services.links import open_link
from consent_service.services.patron_data import ReceiptNotFoundError, patron_data, patron_receipt
from consent_service.services.preferences import (
    EMAIL_ROW,
    Describe,
    PreferenceRow,
    Preferences,
    honour_gpc,
    load_preferences,
    save_preferences,
    send_preference_links,
)
from consent_service.services.topics import name_in
from consent_service.services.unsubscribe import (
    FEEDBACK_TEXT_LIMIT,
    open_unsubscribe_link,
    save_unsubscribe_feedback,
    unsubscribe,
)
from consent_service.services.write_turn import read_without_transaction
from consent_service.web.forms import SafeText
from consent_service.web.i18n import current_language, set_switch_path, use_patron_language
from consent_service.web.patron_data import data_page, json_download

bp = Blueprint("public", __name__)

GPC_LAST_UPDATE = "2026-11-29"  # when our GPC support last changed, for /.well-known/gpc.json

_PURPOSE_TEXT = {
    EMAIL_ROW: (lazy_gettext("All library email"),
                lazy_gettext("Email about programs, services and events. Turning this off stops "
                             "every topic below.")),
    PurposeKey.POSTAL_MARKETING: (lazy_gettext("Postal mail"),
                         lazy_gettext("Letters and flyers about programs and services, sent to "
                                      "your home address.")),
    PurposeKey.PHOTO_VIDEO: (lazy_gettext("Photos and video at library events"),
                    lazy_gettext("Whether you may appear in photos or video the library takes at "
                                 "its activities to show what it does.")),
    PurposeKey.CONTACT_UPDATE: (lazy_gettext("Keeping your contact details current"),
                       lazy_gettext("Whether the library may send your name and address to a "
                                    "company that updates them, for example after you move.")),
    PurposeKey.THIRD_PARTY_MODELING: (lazy_gettext("Sharing your data to reach more people"),
                             lazy_gettext("Whether the library may send your data to a company "
                                          "that builds models to help it reach people who might "
                                          "use the library.")),
}
_TOPIC_TEXT = lazy_gettext("Email on this topic.")
_REASON_TEXT = {
    Reason.INACTIVE: lazy_gettext("Your library account is not active."),
    Reason.NO_POSTAL_ADDRESS: lazy_gettext("We have no postal address for you."),
    Reason.ADDRESS_UNDELIVERABLE: lazy_gettext(
        "Email to your address cannot be delivered. Library staff can update it."),
    Reason.ADDRESS_SUPPRESSED: lazy_gettext(
        "Email to your address was stopped after it was reported as spam. Choose Yes to start it "
        "again."),
    Reason.GUARDIAN_CONSENT_REQUIRED: lazy_gettext("A parent or guardian has to agree first."),
    Reason.NOT_OPTED_IN: lazy_gettext("Only if you say yes."),
}
_FEEDBACK_REASONS = [
    SelectChoice("too_many", lazy_gettext("You send too much email")),
    SelectChoice("not_relevant", lazy_gettext("The email is not interesting to me")),
    SelectChoice("never_signed_up", lazy_gettext("I never asked for this email")),
    SelectChoice("other", lazy_gettext("Another reason")),
]


class RequestLinkForm(FlaskForm):
    email = EmailField(
        lazy_gettext("Email address"),
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
        validators=[DataRequired(message=lazy_gettext("Enter your email address."))],
        render_kw={"autocomplete": "email"})


class FeedbackForm(FlaskForm):
    reason = RadioField(lazy_gettext("Why did you unsubscribe?"), choices=_FEEDBACK_REASONS,
                        validators=[InputRequired(message=lazy_gettext("Choose a reason."))])
    text = TextAreaField(lazy_gettext("Anything else you want to tell us (optional)"),
                         validators=[Length(max=FEEDBACK_TEXT_LIMIT), SafeText(multiline=True)],
                         render_kw={"maxlength": FEEDBACK_TEXT_LIMIT, "rows": 4})


@dataclass(frozen=True)
class RowView:
    """A preference row as the page shows it."""

    row: PreferenceRow
    label: str
    description: str
    status: str
    note: str
    field: Field | None


def _evidence(claims: LinkClaims) -> dict[str, str]:
    return link_evidence(request.remote_addr, request.user_agent.string, claims.token_id)


def _preferences_url(patron_public_id: str) -> str:
    token = runtime.context().signer.sign(LinkKind.PREFERENCES, patron_public_id)
    return url_for("public.preferences", token=token)


@bp.app_context_processor
def _library() -> dict[str, Any]:
    ctx = runtime.context()
    return {"library_name": ctx.library_name, "library_postal_address": ctx.library_postal_address}


@bp.errorhandler(InvalidLinkError)
def bad_link(error: InvalidLinkError) -> ResponseReturnValue:
    """A tampered, expired or wrong-kind link, or one for a patron we do not have: 400, nothing
    recorded, and a way to get a new link by email."""
    return render_template("public/link_problem.html", expired=isinstance(error, ExpiredLinkError),
                           form=RequestLinkForm(formdata=None)), 400


@bp.get("/")
def home() -> ResponseReturnValue:
    """What this service is, and where patrons, guardians and staff go."""
    return render_template("public/home.html")


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt
def unsubscribe_page(token: str) -> ResponseReturnValue:
    """GET/HEAD: what the link stops, one button; nothing changes (mail scanners fetch links).
    POST: the opt-out, from the page's button or from a mail client's RFC 8058 one-click request
    (`List-Unsubscribe=One-Click`, urlencoded or multipart, no cookies): no CSRF token is needed,
    the answer is a 200 page and never a redirect, and repeating it changes nothing. The answer to
    a one-click request has no "tell us why" form: a mail provider's server sends it and nobody
    reads the page, and the form's CSRF token would start a session for that server."""
    ctx = runtime.context()
    now = runtime.now()
    read_without_transaction(db.session)  # an opt-out, if one is recorded, gets a transaction
    link = open_unsubscribe_link(db.session, ctx, token, now=now)
    use_patron_language(link.patron.preferred_language)
    preferences_url = _preferences_url(link.patron.public_id)
    if request.method != "POST":
        return render_template("public/unsubscribe.html", link=link,
                               preferences_url=preferences_url)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    outcome = unsubscribe(db.session, ctx, link,
                          source=Source.ONE_CLICK if one_click else Source.UNSUBSCRIBE_LINK,
                          evidence=_evidence(link.claims), now=now)
    return render_template("public/unsubscribed.html", link=link, since=outcome.since,
                           form=None if one_click else FeedbackForm(formdata=None),
                           preferences_url=preferences_url)


@bp.post("/unsubscribe/<token>/feedback")
def unsubscribe_feedback(token: str) -> ResponseReturnValue:
    """The optional "tell us why" after unsubscribing (CSRF-protected: the confirmation page gave
    the browser a session); stored beside the opt-out event."""
    now = runtime.now()
    link = open_unsubscribe_link(db.session, runtime.context(), token, now=now)
    use_patron_language(link.patron.preferred_language)
    set_switch_path(url_for("public.unsubscribe_page", token=token))
    form = FeedbackForm()
    preferences_url = _preferences_url(link.patron.public_id)
    if not form.validate():
        since = link.stopped.occurred_at if link.stopped else None
        return render_template("public/unsubscribed.html", link=link, since=since, form=form,
                               preferences_url=preferences_url), 400
    save_unsubscribe_feedback(db.session, link, reason_code=form.reason.data,
                              text=form.text.data or "", now=now)
    return render_template("public/feedback_thanks.html", preferences_url=preferences_url)


@bp.route("/preferences/<token>", methods=["GET", "POST"])
def preferences(token: str) -> ResponseReturnValue:
    """The preference center: every purpose the patron decides, what is in force and since when;
    saving (CSRF-protected) records only what changed and emails a confirmation.

    `Sec-GPC: 1` is honoured on a GET as well as on a save, though a GET changes nothing else:
    Global Privacy Control is an opt-out signal that Colorado's Privacy Act requires to be honoured,
    and it is a header the patron's own browser sends on purpose, not a mail scanner's fetch of a
    link. It is recorded once per patron (source `gpc`), and the page says so. A HEAD records
    nothing.
    """
    ctx = runtime.context()
    now = runtime.now()
    patron, claims = open_link(db.session, ctx, LinkKind.PREFERENCES, token, now=now)
    use_patron_language(patron.preferred_language)
    gpc = request.headers.get("Sec-GPC", "").strip() == "1" and request.method != "HEAD"
    changes: list[PreferenceRow] | None = None
    status = 200
    if request.method == "POST":
        form = _preferences_form(load_preferences(db.session, ctx, patron, now=now))
        if form.validate():
            wanted = {field.name: Decision(field.data) for field in form
                      if isinstance(field, RadioField) and field.data}
            changes = save_preferences(db.session, ctx, patron, wanted, _posted_shown(),
                                       evidence=_evidence(claims), gpc=gpc, now=now,
                                       describe=_describer(patron.preferred_language))
        else:
            status = 400
    elif gpc:
        honour_gpc(db.session, ctx, patron, evidence=_evidence(claims), now=now)
    prefs = load_preferences(db.session, ctx, patron, now=now)
    form = _preferences_form(prefs, fresh=changes is not None or request.method != "POST")
    shown = request.form.get("shown", "") if status == 400 else _shown(prefs)
    return render_template(
        "public/preferences.html", prefs=prefs, form=form, rows=_row_views(prefs, form),
        changes=[_change_text(row) for row in changes] if changes is not None else None,
        gpc_signal=gpc, invalid=status == 400, shown=shown,
        policy_url=ctx.guardians.policy_url, data_url=url_for("public.my_data", token=token),
    ), status


class ErasureRequestForm(FlaskForm):
    """The confirmation step of asking for one's data to be erased."""

    confirm = BooleanField(
        lazy_gettext("I understand: the library will erase my name, addresses, birth date and "
                     "card number, and I will no longer get its email."),
        validators=[DataRequired(message=lazy_gettext("Tick this box to confirm you want your "
                                                      "data erased."))])


@bp.route("/preferences/<token>/erase", methods=["GET", "POST"])
def erasure_request(token: str) -> ResponseReturnValue:
    """Ask for one's data to be erased, from the preference center: the page says what erasure
    removes and what the library keeps (a GET changes nothing); a POST with the box ticked, the
    confirmation step, makes an erasure request for staff (asking again while one is open adds
    nothing). Staff carry it out from their erasure requests page."""
    ctx = runtime.context()
    now = runtime.now()
    patron, _claims = open_link(db.session, ctx, LinkKind.PREFERENCES, token, now=now)
    use_patron_language(patron.preferred_language)
    form = ErasureRequestForm()
    preferences_url = url_for(".preferences", token=token)
    if request.method == "GET":
        return render_template("public/erasure_request.html", form=form, asked=None,
                               preferences_url=preferences_url)
    if not form.validate():
        return render_template("public/erasure_request.html", form=form, asked=None,
                               preferences_url=preferences_url), 400
    try:
        _task, new = request_erasure(db.session, patron, requested_by="patron", now=now)
    except ErasureError:
        new = False
    return render_template("public/erasure_request.html", form=form, asked={"new": new},
                           preferences_url=preferences_url)


def _shown(prefs: Preferences) -> str:
    """The form's `shown` field: each answer as the page shows it (`key=decision`), so that saving
    records only what the patron changed on this page (see save_preferences)."""
    return " ".join(f"{row.key}={row.choice.value}" for row in prefs.rows if row.changeable)


def _posted_shown() -> dict[str, Decision] | None:
    """The answers the posted page showed; None for a form without the `shown` field. Pairs that
    do not parse are left out (their rows are then compared with what is in force)."""
    text = request.form.get("shown")
    if text is None:
        return None
    shown = {}
    for pair in text.split():
        key, _sep, value = pair.partition("=")
        if value in (Decision.OPT_IN.value, Decision.OPT_OUT.value):
            shown[key] = Decision(value)
    return shown


def _download_limit() -> str:
    return str(current_app.config["DATA_DOWNLOAD_LIMIT_PER_CLIENT"])


@bp.get("/preferences/<token>/data")
@limiter.limit(_download_limit)
def my_data(token: str) -> ResponseReturnValue:
    """Everything the service holds about the patron, as a readable page (services.patron_data
    says what is theirs and what is left out), with a JSON download and a consent receipt for
    each decision of theirs. Reads only."""
    ctx, now = runtime.context(), runtime.now()
    patron, _claims = open_link(db.session, ctx, LinkKind.PREFERENCES, token, now=now)
    use_patron_language(patron.preferred_language)
    set_switch_path(url_for("public.my_data", token=token))
    return data_page(
        patron_data(db.session, ctx, patron, now=now), title=_("Your data"),
        json_url=url_for("public.my_data_json", token=token),
        receipt_url=lambda receipt: url_for("public.my_receipt", token=token, receipt=receipt),
        back_url=url_for("public.preferences", token=token))


@bp.get("/preferences/<token>/data.json")
@limiter.limit(_download_limit)
def my_data_json(token: str) -> ResponseReturnValue:
    """The same as a JSON file (an attachment)."""
    ctx, now = runtime.context(), runtime.now()
    patron, _claims = open_link(db.session, ctx, LinkKind.PREFERENCES, token, now=now)
    return json_download(patron_data(db.session, ctx, patron, now=now),
                         f"library-data-{patron.public_id}.json")


@bp.get("/preferences/<token>/receipts/<receipt>.json")
@limiter.limit(_download_limit)
def my_receipt(token: str, receipt: str) -> ResponseReturnValue:
    """The consent receipt (Kantara CR v1.1) of one of the patron's own decisions, as a JSON file.

    :raise 404: for a receipt id that is not one of this patron's events.
    """
    ctx, now = runtime.context(), runtime.now()
    patron, _claims = open_link(db.session, ctx, LinkKind.PREFERENCES, token, now=now)
    try:
        found = patron_receipt(db.session, ctx, patron, receipt, now=now)
    except ReceiptNotFoundError:
        abort(404)
    return json_download(found, f"consent-receipt-{receipt}.json")


@bp.route("/preferences", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["PREFERENCE_LINK_LIMIT_PER_CLIENT"], methods=["POST"])
@limiter.limit(lambda: current_app.config["PREFERENCE_LINK_LIMIT_PER_ADDRESS"], methods=["POST"],
               key_func=lambda: _address_limit_key())
def request_link() -> ResponseReturnValue:
    """Email me a link: the same answer whether or not the address is known (no account
    enumeration); one message lists a preference link for each patron at the address. Limited per
    client and per address; an address that cannot receive mail gets the form again (400)."""
    form = RequestLinkForm()
    if request.method != "POST":
        return render_template("public/request_link.html", form=form)
    if form.validate():
        try:
            send_preference_links(db.session, runtime.context(), form.email.data or "",
                                  language=current_language(), now=runtime.now())
        except InvalidEmailError:
            form.email.errors = [_("Enter an email address like name@example.org.")]
        else:
            return render_template("public/link_sent.html")
    return render_template("public/request_link.html", form=form), 400


@bp.get("/.well-known/gpc.json")
def gpc_support() -> ResponseReturnValue:
    """Global Privacy Control support, as the GPC specification asks sites to declare it."""
    return jsonify(gpc=True, lastUpdate=GPC_LAST_UPDATE)


def _address_limit_key() -> str:
    """The per-address rate-limit key: the address's keyed hash, so the limiter's store never holds
    an address; text that is not an address is hashed as typed."""
    raw = request.form.get("email", "")
    try:
        email = normalize_email(raw)
    except InvalidEmailError:
        email = raw.strip().lower()
    return "address:" + runtime.context().address_key(email)


def _preferences_form(prefs: Preferences, *, fresh: bool = False) -> FlaskForm:
    """A form with one Yes/No question per row the patron may change; `fresh` shows what is in
    force instead of what was posted."""

    class PreferencesForm(FlaskForm):
        pass

    for row in prefs.rows:
        if row.changeable:
            setattr(PreferencesForm, row.key, RadioField(
                _row_text(row)[0],
                choices=[SelectChoice(Decision.OPT_IN.value, _("Yes")),
                         SelectChoice(Decision.OPT_OUT.value, _("No"))],
                default=row.choice.value))
    return PreferencesForm(formdata=None) if fresh else PreferencesForm()


def _row_text(row: PreferenceRow) -> tuple[str, str]:
    if row.topic is not None:
        topic = name_in(row.topic_names, current_language()) if row.topic_names else row.topic
        return topic, str(_TOPIC_TEXT)
    label, description = _PURPOSE_TEXT[row.key]
    return str(label), str(description)


def _is_mail(row: PreferenceRow) -> bool:
    """Whether the row is about something sent to the patron (email, postal mail)."""
    return runtime.context().catalog.get(row.purpose).channel is not Channel.NONE


def _status(row: PreferenceRow) -> str:
    mail = _is_mail(row)
    if row.allowed:
        text = _("You get this") if mail else _("Allowed")
    else:
        text = _("You don't get this") if mail else _("Not allowed")
    if row.decided_at is not None and row.reason in (None, Reason.OPTED_OUT):
        return _("%(status)s since %(date)s", status=text,
                 date=format_date(row.decided_at, format="long"))
    if row.allowed and row.decided_at is None:
        return _("%(status)s (you have not told us otherwise)", status=text)
    return text


def _row_views(prefs: Preferences, form: FlaskForm) -> list[RowView]:
    views = []
    for row in prefs.rows:
        label, description = _row_text(row)
        note = str(_REASON_TEXT.get(row.reason, "")) if row.reason else ""
        views.append(RowView(row, label, description, _status(row), note,
                             getattr(form, row.key, None)))
    return views


def _change_text(row: PreferenceRow) -> dict[str, str]:
    label = _row_text(row)[0]
    if row.choice is Decision.OPT_IN:
        decision = _("Yes, you get this") if _is_mail(row) else _("Yes, allowed")
    else:
        decision = _("No, you don't get this") if _is_mail(row) else _("No, not allowed")
    return {"label": label, "decision_label": decision}


def _describer(language: str) -> Describe:
    """Label changes in the patron's language, for the confirmation email."""

    def describe(rows: Sequence[PreferenceRow]) -> list[dict[str, str]]:
        with force_locale(language):
            return [_change_text(row) for row in rows]

    return describe

