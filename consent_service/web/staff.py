"""The staff pages' door: signing in and out, the staff home, and `staff_required`, which every
staff page uses to ask for a signed-in member whose role has a permission (domain.staff).

Staff pages are in English. Every one answers `Cache-Control: no-store` (library records are
confidential); a login lasts CONSENT_STAFF_SESSION_HOURS; sign-in is rate-limited per client and
an account locks after repeated wrong passwords (services.staff_accounts). Signing out ends every
session of the member server-side: the session holds the account's session epoch from sign-in, and
a session whose epoch is no longer the account's is anonymous (a copied cookie included).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from consent_service import runtime
from consent_service.domain.staff import Permission
from consent_service.extensions import db, limiter, login_manager
from consent_service.services.staff_accounts import (
    LoginRefusedError,
    StaffMember,
    end_sessions,
    find_staff,
    sign_in,
)

bp = Blueprint("staff", __name__, url_prefix="/staff")
SIGNED_IN_AT = "staff_signed_in_at"  # in the session: when this login began (POSIX seconds)
SESSION_EPOCH = "staff_session_epoch"  # in the session: the account's session epoch at sign-in

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


class SignedIn(UserMixin):  # type: ignore[misc]
    """The signed-in staff member, as Flask-Login holds them."""

    def __init__(self, member: StaffMember) -> None:
        self.member = member
        self.id = member.id
        self.email = member.email
        self.role = member.role

    def may(self, permission: Permission) -> bool:
        return self.member.may(permission)


@login_manager.user_loader
def _load(user_id: str) -> SignedIn | None:
    """The session's staff member, if the account is active and has not signed out (nor been
    deactivated) since this session began: else the session is anonymous."""
    member = find_staff(db.session, int(user_id)) if user_id.isdigit() else None
    if member is None or session.get(SESSION_EPOCH) != member.session_epoch:
        return None
    return SignedIn(member)


@login_manager.unauthorized_handler
def _sign_in_first() -> ResponseReturnValue:
    """An anonymous request for a staff page: the sign-in page, then back (a form post: 401)."""
    if request.method != "GET":
        abort(401)
    return redirect(url_for("staff.login", next=request.full_path.rstrip("?")))


def staff_required(permission: Permission | None = None) -> Callable[[View], View]:
    """A staff page: signed in (else the sign-in page), and with `permission` (else 403)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if permission is not None and not current_user.may(permission):
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


@bp.before_app_request
def _expire_old_logins() -> None:
    """A login older than CONSENT_STAFF_SESSION_HOURS (on the app's clock) is signed out, whatever
    the cookie says."""
    started = session.get(SIGNED_IN_AT)
    if started is None:
        return
    hours = current_app.config["STAFF_SESSION_HOURS"]
    if runtime.now().timestamp() - float(started) > hours * 3600:
        logout_user()
        session.clear()


@bp.after_app_request
def _no_store(response: Response) -> Response:
    if request.blueprint is not None and request.blueprint.startswith("staff"):
        response.headers["Cache-Control"] = "no-store"
    return response


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site under /staff, never another site."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/staff/"):
        return url_for("staff.home")
    return parts.path + (f"?{parts.query}" if parts.query else "")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["STAFF_LOGIN_LIMIT_PER_CLIENT"], methods=["POST"])
def login() -> ResponseReturnValue:
    """GET: the sign-in form. POST: signs in and goes where the person was going (a /staff page);
    a refused sign-in gives the form again (401) with one line that does not say why."""
    form = LoginForm()
    refused = None
    if request.method == "POST" and form.validate():
        config = current_app.config
        try:
            member = sign_in(db.session, form.email.data or "", form.password.data or "",
                             now=runtime.now(), lockout_failures=config["STAFF_LOCKOUT_FAILURES"],
                             lockout=timedelta(minutes=config["STAFF_LOCKOUT_MINUTES"]))
        except LoginRefusedError as error:
            refused = str(error).capitalize() + "."
        else:
            session.clear()  # a fresh session: nothing from before signing in is carried over
            session.permanent = True
            session[SIGNED_IN_AT] = runtime.now().timestamp()
            session[SESSION_EPOCH] = member.session_epoch
            login_user(SignedIn(member))
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        refused = "Enter your email and password."
    status = 401 if refused else 200
    return render_template("staff/login.html", form=form, refused=refused), status


@bp.post("/logout")
@staff_required()
def logout() -> ResponseReturnValue:
    """Sign out (a POST with the page's CSRF token, so no link can sign anyone out): every session
    of this member ends, on this browser and any other, and any copy of its cookie with it."""
    end_sessions(db.session, current_user.id)
    logout_user()
    session.clear()
    return redirect(url_for("staff.login"))


@dataclass(frozen=True)
class StaffPage:
    """A link on the staff home: the page, and what a role needs to see it."""

    endpoint: str
    title: str
    permission: Permission


# Staff pages register themselves here (`staff_page`), so the home lists what each role may open.
PAGES: list[StaffPage] = []


def staff_page(endpoint: str, title: str, permission: Permission) -> None:
    """List a staff page on the staff home for the roles that have `permission`."""
    PAGES.append(StaffPage(endpoint, title, permission))


@bp.get("/")
@staff_required()
def home() -> ResponseReturnValue:
    """The staff home: the pages this member's role may open."""
    pages = [{"url": url_for(page.endpoint), "title": page.title}
             for page in PAGES if current_user.may(page.permission)]
    return render_template("staff/home.html", pages=pages)


def init_app(app: Flask) -> None:
    """Flask-Login for the staff pages; a login lasts CONSENT_STAFF_SESSION_HOURS."""
    login_manager.init_app(app)
    # Flask-Login's session protection would clear or mark every patron page's session (which
    # holds only a CSRF token); a staff login is protected instead by the session cookie's flags
    # (HttpOnly, SameSite, Secure in production), a fresh session at sign-in, and its fixed expiry.
    login_manager.session_protection = None
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["STAFF_SESSION_HOURS"])
