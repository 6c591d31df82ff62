"""Admin pages: the access log (who viewed which patron), staff accounts, email topics, API keys,
policy versions.

Every view asks `staff_required` for its permission (domain.staff); a form post that cannot be
done answers 400 with one line and changes nothing.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from consent_service import runtime
from consent_service.domain import ConsentServiceError
from consent_service.domain.staff import Permission, Role
from consent_service.extensions import db
from consent_service.services.access_log import read_access_log
from consent_service.services.api_keys import (
    Scope,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from consent_service.services.policies import (
    SUMMARY_LIMIT,
    parse_effective,
    policy_lines,
    publish_policy,
)
from consent_service.services.staff_admin import (
    create_account,
    deactivate_account,
    staff_accounts,
    topic_lines,
)
from consent_service.services.topics import add_topic
from consent_service.web.forms import SafeText
from consent_service.web.staff import staff_page, staff_required
from consent_service.web.staff_words import first_error, sentence, use_in

bp = Blueprint("staff_admin", __name__, url_prefix="/staff")
use_in(bp)

staff_page("staff_admin.access_log", "Access log: who viewed which patron",
           Permission.READ_ACCESS_LOG)
staff_page("staff_admin.accounts", "Staff accounts", Permission.MANAGE_STAFF)
staff_page("staff_admin.topics", "Email topics", Permission.MANAGE_TOPICS)
staff_page("staff_admin.api_keys", "API keys for other systems", Permission.MANAGE_API_KEYS)
staff_page("staff_admin.policies", "Privacy policy versions", Permission.MANAGE_POLICIES)

_ROLE_WORDS = {Role.ADMIN: "admin: accounts, topics, API keys, the access log, and all staff pages",
               Role.STAFF: "staff: patrons, decisions, guardians' requests, photo roster",
               Role.MARKETING: "marketing: exports and counts only"}


class AccountForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired("Enter the email address."),
                                            Length(max=320)])
    role = SelectField("Role", choices=[SelectChoice(role.value, _ROLE_WORDS[role]) for role in Role],
                       default=Role.STAFF.value)


class TopicForm(FlaskForm):
    key = StringField("Key (lower-case letters, digits, _ and -; an existing key renames it)",
                      validators=[InputRequired("Enter the topic's key."), Length(max=64)])
    name = StringField("Name in English", validators=[InputRequired("Enter the topic's name."),
                                                      Length(max=200)])
    name_es = StringField("Name in Spanish (optional)", validators=[Length(max=200)])
    sendgrid_group = IntegerField(
        "SendGrid unsubscribe group id (optional)",
        validators=[Optional(), NumberRange(min=1, message="A SendGrid group id is a positive "
                                                           "number.")])


_SCOPE_WORDS = {Scope.PATRONS_WRITE: "patrons:write: create and update patron records",
                Scope.CONSENTS_READ: "consents:read: decisions, eligibility, the ledger feed",
                Scope.CONSENTS_WRITE: "consents:write: record decisions",
                Scope.EXPORTS_READ: "exports:read: eligible-contact exports",
                Scope.PATRONS_ERASE: "patrons:erase: erase a patron's personal data"}


class ApiKeyForm(FlaskForm):
    name = StringField("Name (the system that will use it)",
                       validators=[InputRequired("Enter a name for the key."), Length(max=100)])
    scopes = SelectMultipleField(
        "Scopes", choices=[SelectChoice(scope.value, _SCOPE_WORDS[scope]) for scope in Scope],
        validators=[InputRequired("Choose at least one scope.")],
        widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())


class PolicyForm(FlaskForm):
    version = StringField("Version (e.g. 2027-01; letters, digits, '.', '_' and '-')",
                          validators=[InputRequired("Enter the version's name."),
                                      Length(max=32)])
    effective = DateField("In force from (the start of that day; today means now)",
                          validators=[InputRequired("Enter the date it takes effect.")])
    summary = TextAreaField("What changed, in a few lines (patrons see it)",
                            validators=[InputRequired("Say what changed."),
                                        Length(max=SUMMARY_LIMIT), SafeText(multiline=True)],
                            render_kw={"rows": 6})
    summary_es = TextAreaField("The same in Spanish (optional; Spanish readers see the English "
                               "otherwise)",
                               validators=[Length(max=SUMMARY_LIMIT), SafeText(multiline=True)],
                               render_kw={"rows": 6})
    material = BooleanField("A material change: announce it by email (`flask policy notify`)")


@bp.route("/admin/policies", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_POLICIES)
def policies() -> ResponseReturnValue:
    """Policy versions, latest first; POST publishes one (as `flask policy publish`): not in the
    past, after the latest version, a summary of what changed."""
    form = PolicyForm()
    error = None
    if request.method == "POST":
        if not form.validate():
            error = first_error(form)
        else:
            ctx, now = runtime.context(), runtime.now()
            try:
                published = publish_policy(
                    db.session, version=form.version.data or "",
                    effective_at=parse_effective(form.effective.data.isoformat(), ctx, now=now),
                    summary=form.summary.data or "", summaries={"es": form.summary_es.data or ""},
                    material=bool(form.material.data), now=now)
            except ConsentServiceError as error_:
                db.session.rollback()
                error = sentence(error_)
            else:
                flash(f"Policy {published.version} is published, in force from "
                      f"{published.effective_at.date().isoformat()}."
                      + (f" Announce it with `flask policy notify {published.version}`."
                         if published.material else ""), "success")
                return redirect(url_for(".policies"))
    return render_template("staff/admin/policies.html", form=form,
                           policies=policy_lines(db.session), error=error), 400 if error else 200


@bp.get("/access-log")
@staff_required(Permission.READ_ACCESS_LOG)
def access_log() -> ResponseReturnValue:
    """Who viewed which patron's record, newest first; `?staff=EMAIL`, `?card=CARD`, `?page=`."""
    staff_email = request.args.get("staff", "")
    card = request.args.get("card", "")
    log = read_access_log(db.session, staff_email=staff_email, card_number=card,
                          page=request.args.get("page", 1, type=int) or 1)
    return render_template("staff/admin/access_log.html", log=log, staff_email=staff_email,
                           card=card, accounts=staff_accounts(db.session))


def _accounts_page(form: AccountForm, *, created: object = None, error: str | None = None,
                   status: int = 200) -> ResponseReturnValue:
    return render_template("staff/admin/accounts.html", form=form,
                           accounts=staff_accounts(db.session), created=created, error=error,
                           me=current_user.member.id), status


@bp.route("/admin/staff", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_STAFF)
def accounts() -> ResponseReturnValue:
    """Staff accounts; POST creates one with a generated password, shown on this answer only."""
    form = AccountForm()
    if request.method == "GET":
        return _accounts_page(form)
    if not form.validate():
        return _accounts_page(form, error=first_error(form), status=400)
    try:
        created = create_account(db.session, form.email.data or "", form.role.data or "",
                                 now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return _accounts_page(form, error=sentence(error), status=400)
    return _accounts_page(AccountForm(formdata=None), created=created)


@bp.post("/admin/staff/<int:account_id>/deactivate")
@staff_required(Permission.MANAGE_STAFF)
def deactivate(account_id: int) -> ResponseReturnValue:
    """Deactivate an account (not one's own): it cannot sign in, and its login ends."""
    try:
        account = deactivate_account(db.session, account_id, by=current_user.member)
    except ConsentServiceError as error:
        db.session.rollback()
        return _accounts_page(AccountForm(formdata=None), error=sentence(error), status=400)
    flash(f"{account.email} is deactivated: it can no longer sign in.", "success")
    return redirect(url_for(".accounts"))


@bp.route("/admin/topics", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_TOPICS)
def topics() -> ResponseReturnValue:
    """Email topics; POST adds one or renames it (as `flask topics add KEY --name … --name-es …
    --sendgrid-group …`). `?key=` fills the form with a topic to rename it."""
    form = TopicForm()
    error = None
    if request.method == "GET":
        chosen = next((t for t in topic_lines(db.session) if t.key == request.args.get("key")),
                      None)
        if chosen is not None:
            form = TopicForm(formdata=None, key=chosen.key, name=chosen.name,
                             name_es=chosen.name_es, sendgrid_group=chosen.sendgrid_group_id)
    elif not form.validate():
        error = first_error(form)
    else:
        try:
            topic = add_topic(db.session, key=form.key.data or "", name=form.name.data or "",
                              sendgrid_group_id=form.sendgrid_group.data,
                              names={"es": form.name_es.data} if form.name_es.data else None,
                              now=runtime.now())
        except ConsentServiceError as error_:
            db.session.rollback()
            error = sentence(error_)
        else:
            flash(f"Topic {topic.key} saved: {topic.name}.", "success")
            return redirect(url_for(".topics"))
    return render_template("staff/admin/topics.html", form=form, topics=topic_lines(db.session),
                           error=error), 400 if error else 200


def _api_keys_page(form: ApiKeyForm, *, created: object = None, key: str | None = None,
                   error: str | None = None, status: int = 200) -> ResponseReturnValue:
    return render_template("staff/admin/api_keys.html", form=form, keys=list_api_keys(db.session),
                           created=created, key=key, error=error), status


@bp.route("/admin/api-keys", methods=["GET", "POST"])
@staff_required(Permission.MANAGE_API_KEYS)
def api_keys() -> ResponseReturnValue:
    """API keys; POST creates one (as `flask apikeys create`), the key shown on this answer only."""
    form = ApiKeyForm()
    if request.method == "GET":
        return _api_keys_page(form)
    if not form.validate():
        return _api_keys_page(form, error=first_error(form), status=400)
    try:
        created, key = create_api_key(db.session, form.name.data or "", form.scopes.data or [],
                                      now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return _api_keys_page(form, error=sentence(error), status=400)
    return _api_keys_page(ApiKeyForm(formdata=None), created=created, key=key)


@bp.post("/admin/api-keys/<prefix>/revoke")
@staff_required(Permission.MANAGE_API_KEYS)
def revoke_key(prefix: str) -> ResponseReturnValue:
    """Revoke a key by its prefix: refused from the next request on."""
    try:
        info, _now = revoke_api_key(db.session, prefix, now=runtime.now())
    except ConsentServiceError as error:
        db.session.rollback()
        return _api_keys_page(ApiKeyForm(formdata=None), error=sentence(error), status=400)
    flash(f"The key {info.name} ({info.prefix}…) is revoked.", "success")
    return redirect(url_for(".api_keys"))
