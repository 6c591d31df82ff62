"""Flask extensions, created unbound; `create_app` binds them (Flask-Migrate: `configure_migrations`)."""

import os

from flask import Flask
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
babel = Babel()
# Limits are declared on the routes that need them; the storage is RATELIMIT_STORAGE_URI.
limiter = Limiter(get_remote_address)
login_manager = LoginManager()  # staff pages; its user loader is in web/staff.py


def configure_migrations(app: Flask) -> None:
    """Bind Flask-Migrate (and so Alembic) to `app`, once: what `flask db ...` and `upgrade()`
    need. Not done by `create_app`: importing Alembic took about a fifth of every command's and
    worker's start-up (0.2 s of CPU), and only the `db` commands, `demo` and the tests' schema use
    it."""
    if "migrate" in app.extensions:
        return
    from flask_migrate import Migrate

    Migrate(compare_type=True, render_as_batch=True).init_app(
        app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
