"""Staff pages about patrons: finding one, their record (every view written to the access log),
recording what they told us, guardians' requests and ID checks, and the photo roster.

Every view asks `staff_required` for its permission (domain.staff). A form post that cannot be
recorded answers 400 with one line and records nothing (a patron page shown again with the line
is a view of the record, and is logged as every view is).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, RadioField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.domain.ledger import STAFF_SOURCES, Decision, Source
from consent_service.domain.purposes import PATRON_PURPOSES, VENDOR_PURPOSES
from consent_service.domain.staff import Permission
from consent_service.extensions import db
from consent_service.services.csv_input import decode_text
from consent_service.services.erasure import (
    carry_out_request,
    erase_patron,
    erasure_tasks,
    find_patron_to_erase,
)
from consent_service.services.guardians.staff import close_family_task, family_tasks
from consent_service.services.patron_record import open_patron_record
from consent_service.services.photo_roster import check_roster, read_card_numbers
from consent_service.services.staff_admin import topic_lines
from consent_service.services.staff_desk import (
    NOTE_LIMIT,
    PatronRecordNotFoundError,
    StaffDecision,
    record_for_patron,
    record_guardian_id_check,
    search_patrons,
)
from consent_service.web.staff import staff_page, staff_required
from consent_service.web.staff_words import DECISION_WORDS, first_error, sentence, use_in

bp = Blueprint("staff_patrons", __name__, url_prefix="/staff")
use_in(bp)

staff_page("staff_patrons.search", "Find a patron", Permission.LOOK_UP_PATRONS)
staff_page("staff_patrons.guardian_tasks", "Guardians' requests for a child's data",
           Permission.GUARDIAN_TASKS)
staff_page("staff_patrons.erasure_requests", "Erasure requests", Permission.ERASE_PATRONS)
staff_page("staff_patrons.photo_roster", "Photo roster for an event", Permission.PHOTO_ROSTER)

ROSTER_FILE_LIMIT = 1024 * 1024  # an uploaded sign-in sheet: 1 MiB is tens of thousands of cards
TASK_WORDS = {"download": "a copy of the child's data", "erasure": "erase the child's data"}
_CHANNEL_WORDS = {Source.STAFF_DESK: "At the desk, in person", Source.STAFF_PHONE: "On the phone",
                  Source.STAFF_EMAIL: "By email", Source.STAFF_PAPER_FORM: "On a paper form"}


class DecisionForm(FlaskForm):
    """Record what a patron told staff; the purposes and topics are set from the catalog."""

    purpose = SelectField("Purpose", validators=[InputRequired("Choose a purpose.")])
    topic = SelectField("Email topic (for email only)")
    decision = RadioField("Decision",
                          choices=[SelectChoice(d.value, DECISION_WORDS[d]) for d in Decision],
                          validators=[InputRequired("Choose yes or no.")])
    source = RadioField("How the patron told us",
                        choices=[SelectChoice(s.value, _CHANNEL_WORDS[s]) for s in STAFF_SOURCES],
                        validators=[InputRequired("Say how the patron told us.")])
    note = TextAreaField("Note (optional)", render_kw={"maxlength": NOTE_LIMIT, "rows": 3})


class IdCheckForm(FlaskForm):
    """A guardian's consent to vendor sharing for a child, after staff checked their ID."""

    # the choices are the child's guardians, shown on the page; the service checks the link
    guardian = RadioField("Guardian", validate_choice=False,
                          validators=[InputRequired("Choose the guardian.")])
    purpose = RadioField("Sharing the guardian allows",
                         validators=[InputRequired("Choose what the guardian allows.")])
    checked = BooleanField("I checked this guardian's photo ID in person",
                           validators=[DataRequired("Confirm that you checked the ID.")])


class RosterForm(FlaskForm):
    cards = TextAreaField("Card numbers (one a line, or separated by commas)",
                          render_kw={"rows": 8})
    file = FileField("Or upload the sign-in sheet (CSV with a card_number column, or text)")


def _decision_form(*, blank: bool = False) -> DecisionForm:
    """The decision form (`blank`: as first shown, not read from the request), with the catalog's
    purposes a patron decides and the configured topics."""
    form = DecisionForm(formdata=None) if blank else DecisionForm()
    ctx = runtime.context()
    form.purpose.choices = [SelectChoice(p.key, p.label) for p in ctx.catalog
                           if p.key in PATRON_PURPOSES]
    form.topic.choices = [SelectChoice("", "All email (every topic)")] + [
        SelectChoice(topic.key, topic.name) for topic in topic_lines(db.session)]
    return form


def _id_check_form(*, blank: bool = False) -> IdCheckForm:
    form = IdCheckForm(formdata=None) if blank else IdCheckForm()
    catalog = runtime.context().catalog
    form.purpose.choices = [SelectChoice(key, catalog.get(key).label) for key in VENDOR_PURPOSES]
    return form


@bp.get("/patrons")
@staff_required(Permission.LOOK_UP_PATRONS)
def search() -> ResponseReturnValue:
    """Find patrons by card number, email address or name (`?q=`): at most 50, through indexes."""
    text = request.args.get("q", "")
    try:
        result = search_patrons(db.session, runtime.context(), text) if text.strip() else None
    except ConsentServiceError as error:
        return render_template("staff/patrons/search.html", q=text, result=None,
                               error=sentence(error)), 400
    return render_template("staff/patrons/search.html", q=text, result=result, error=None)


def _patron_page(public_id: str, *, form: DecisionForm | None = None,
                 id_form: IdCheckForm | None = None, error: str | None = None,
                 status: int = 200) -> ResponseReturnValue:
    """The patron page; opening it writes the access log (committed)."""
    try:
        record = open_patron_record(db.session, runtime.context(), public_id,
                                    staff_id=current_user.member.id, now=runtime.now(),
                                    history_page=request.args.get("page", 1, type=int) or 1)
    except PatronRecordNotFoundError:
        abort(404)
    guardians = [SelectChoice(g.ref, f"{g.name} (card {g.card_number})" if g.card_number
                              else g.ref) for g in record.guardians if g.ref]
    catalog = runtime.context().catalog
    id_form = id_form or _id_check_form(blank=True)
    id_form.guardian.choices = guardians
    return render_template(
        "staff/patrons/patron.html", record=record, form=form or _decision_form(blank=True),
        id_form=id_form, error=error,
        may_record=current_user.may(Permission.RECORD_DECISIONS),
        may_erase=current_user.may(Permission.ERASE_PATRONS), erase_form=EraseForm(),
        purpose_labels={p.key: p.label for p in catalog},
        topic_purposes={p.key for p in catalog if p.has_topics}), status


@bp.get("/patrons/<public_id>")
@staff_required(Permission.LOOK_UP_PATRONS)
def patron(public_id: str) -> ResponseReturnValue:
    """A patron's record: decisions in force with source and time, eligibility in words, the
    ledger newest first (`?page=`), guardians both ways and pending requests. Every view is
    written to the access log."""
    return _patron_page(public_id)


@bp.post("/patrons/<public_id>/decisions")
@staff_required(Permission.RECORD_DECISIONS)
def record(public_id: str) -> ResponseReturnValue:
    """Record a decision the patron told staff about (actor staff), then show the page again
    saying whether it is in force; bad input: 400 with one line, nothing recorded."""
    form = _decision_form()
    if not form.validate():
        return _patron_page(public_id, form=form, error=first_error(form), status=400)
    told = StaffDecision(purpose=form.purpose.data or "", topic=form.topic.data or None,
                         decision=Decision(form.decision.data), source=Source(form.source.data),
                         note=form.note.data or "")
    try:
        outcome = record_for_patron(db.session, runtime.context(), public_id, told,
                                    staff=current_user.member, now=runtime.now())
    except PatronRecordNotFoundError:
        abort(404)
    except ConsentServiceError as error:
        db.session.rollback()
        return _patron_page(public_id, form=form, error=sentence(error), status=400)
    if not outcome.written:
        flash("Nothing recorded: that decision is already in force.", "info")
    elif outcome.effective:
        flash("Recorded; it is in force now.", "success")
    else:
        flash("Recorded, but not in force: under 13, only a guardian's opt-in counts. "
              "Ask the guardian to agree.", "warning")
    return redirect(url_for(".patron", public_id=public_id, _anchor="in-force"))


@bp.post("/patrons/<public_id>/id-check")
@staff_required(Permission.RECORD_DECISIONS)
def id_check(public_id: str) -> ResponseReturnValue:
    """A guardian's consent to vendor sharing for a child under 13, after staff checked the
    guardian's ID in person: recorded with the guardian as actor and the signed-in staff member's
    email as evidence (as `flask guardians verify-id` does)."""
    form = _id_check_form()
    if not form.validate():
        return _patron_page(public_id, id_form=form, error=first_error(form), status=400)
    try:
        record_guardian_id_check(db.session, runtime.context(), public_id,
                                 guardian=form.guardian.data or "",
                                 purpose=form.purpose.data or "", staff=current_user.member,
                                 now=runtime.now())
    except PatronRecordNotFoundError:
        abort(404)
    except ConsentServiceError as error:
        db.session.rollback()
        return _patron_page(public_id, id_form=form,
                            error=sentence(error), status=400)
    flash("Recorded the guardian's consent after the ID check; a confirmation is on its way "
          "to the guardian.", "success")
    return redirect(url_for(".patron", public_id=public_id, _anchor="in-force"))


@bp.get("/guardian-tasks")
@staff_required(Permission.GUARDIAN_TASKS)
def guardian_tasks() -> ResponseReturnValue:
    """Guardians' open requests for a child's data or its erasure, oldest first."""
    return render_template("staff/patrons/guardian_tasks.html", tasks=family_tasks(db.session),
                           task_words=TASK_WORDS, error=None)


@bp.post("/guardian-tasks/<int:task_id>/done")
@staff_required(Permission.GUARDIAN_TASKS)
def guardian_task_done(task_id: int) -> ResponseReturnValue:
    """Mark a guardian's request done (as `flask guardians done` does)."""
    try:
        task = close_family_task(db.session, task_id, now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return render_template("staff/patrons/guardian_tasks.html",
                               tasks=family_tasks(db.session), task_words=TASK_WORDS,
                               error=sentence(error)), 400
    flash(f"Request {task.id} ({TASK_WORDS.get(task.kind, task.kind)}) marked done.", "success")
    return redirect(url_for(".guardian_tasks"))


class EraseForm(FlaskForm):
    """Erase a patron: the card number typed again, so a slip cannot erase the wrong record."""

    card = StringField("Type the patron's card number to confirm",
                       validators=[DataRequired("Type the card number to confirm.")])


REQUESTER_WORDS = {"patron": "the patron (preference center)", "guardian": "a guardian (family page)",
                   "staff": "staff", "api": "the API", "cli": "a command", "retention": "retention"}


def _erasure_page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    return render_template("staff/patrons/erasure_requests.html", tasks=erasure_tasks(db.session),
                           requester_words=REQUESTER_WORDS, error=error), status


@bp.get("/erasure-requests")
@staff_required(Permission.ERASE_PATRONS)
def erasure_requests() -> ResponseReturnValue:
    """Erasure requests: open ones to carry out, oldest first, then those done, with who did them."""
    return _erasure_page()


@bp.post("/erasure-requests/<int:request_id>/erase")
@staff_required(Permission.ERASE_PATRONS)
def erasure_request_erase(request_id: int) -> ResponseReturnValue:
    """Carry out an open erasure request (as `patrons erase`); 400 with one line otherwise."""
    try:
        carry_out_request(db.session, runtime.context(), request_id,
                          done_by=current_user.member.email, now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return _erasure_page(sentence(error), 400)
    flash(f"Request {request_id}: the patron's personal data is erased.", "success")
    return redirect(url_for(".erasure_requests"))


@bp.post("/patrons/<public_id>/erase")
@staff_required(Permission.ERASE_PATRONS)
def erase(public_id: str) -> ResponseReturnValue:
    """Erase a patron's personal data, after the card number is typed again to confirm; the
    record stays as a tombstone with its decisions (services/erasure.py)."""
    try:
        patron = find_patron_to_erase(db.session, public_id=public_id)
    except ConsentServiceError:
        abort(404)
    form = EraseForm()
    if not form.validate_on_submit() or (form.card.data or "").strip() != patron.card_number:
        return _patron_page(public_id, error="Nothing was erased: type the patron's card number "
                                              "exactly to confirm.", status=400)
    try:
        erase_patron(db.session, runtime.context(), patron, requested_by="staff",
                     done_by=current_user.member.email, now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return _patron_page(public_id, error=sentence(error), status=400)
    flash("The patron's personal data is erased; the record stays, without it, with its "
          "decisions.", "success")
    return redirect(url_for(".erasure_requests"))


@bp.route("/photo-roster", methods=["GET", "POST"])
@staff_required(Permission.PHOTO_ROSTER)
def photo_roster() -> ResponseReturnValue:
    """Paste or upload an event's sign-in card numbers; answer who must not be photographed
    (printable on one page) and which card numbers are unknown. Each patron found is written to
    the access log."""
    form = RosterForm()
    if request.method == "GET":
        return render_template("staff/patrons/photo_roster.html", form=form, roster=None)
    now = runtime.now()
    try:
        cards = read_card_numbers(form.cards.data or "", _uploaded_text())
        roster = check_roster(db.session, runtime.context(), cards,
                              staff_id=current_user.member.id, now=now)
    except ConsentServiceError as error:
        db.session.rollback()
        return render_template("staff/patrons/photo_roster.html", form=form, roster=None,
                               error=sentence(error)), 400
    return render_template("staff/patrons/photo_roster.html", form=form, roster=roster, now=now)


class UploadError(ConsentServiceError):
    """An uploaded sign-in sheet that is not text, or too big."""


def _uploaded_text() -> str:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return ""
    data = upload.stream.read(ROSTER_FILE_LIMIT + 1)
    if len(data) > ROSTER_FILE_LIMIT:
        raise UploadError(f"the file is larger than {ROSTER_FILE_LIMIT // 1024} KiB")
    return decode_text(data, "the file")
