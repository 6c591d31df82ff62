"""The WSGI entry point: `gunicorn wsgi:app`. The only module-level application."""

from consent_service import create_app

app = create_app()
