"""The dependency audit's fallback (scripts/audit_dependencies.py): advisories read from PyPI's
project pages, here served by a local server on 127.0.0.1 that answers like PyPI for every installed
distribution, with the advisories a test gives it."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_dependencies.py"
INSTALLED = {d.metadata["Name"].lower(): d.version for d in distributions() if d.metadata["Name"]}


@pytest.fixture
def pypi(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, dict[str, Any]]]]:
    """The script as a module pointed at a local PyPI, and that PyPI's pages by project name (each
    installed distribution at its installed version, with no advisories, until a test edits it)."""
    pages = {name: {"info": {"version": installed}, "vulnerabilities": []}
             for name, installed in INSTALLED.items()}

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.strip("/").split("/")[1]
            body = json.dumps(pages[name]).encode() if name in pages else b"{}"
            self.send_response(200 if name in pages else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "PYPI_PROJECT",
                        f"http://127.0.0.1:{server.server_port}/pypi/{{name}}/json")
    try:
        yield script, pages
    finally:
        server.shutdown()
        server.server_close()


def advisory(identifier: str, fixed_in: list[str], withdrawn: str | None = None) -> dict[str, Any]:
    return {"id": identifier, "fixed_in": fixed_in, "withdrawn": withdrawn, "aliases": []}


def test_a_clean_set_of_latest_releases_passes_and_says_how_many_were_audited(pypi, capsys):
    script, _ = pypi
    assert script.audit_latest_releases() == 0
    out = capsys.readouterr().out
    audited = len(INSTALLED) - ("consent-service" in INSTALLED)
    assert f"{audited} of {audited} dependencies audited" in out
    assert "0 vulnerable with a fix" in out


def test_an_advisory_with_a_fix_fails_the_audit_and_names_the_upgrade(pypi, capsys):
    script, pages = pypi
    pages["flask"]["vulnerabilities"] = [advisory("PYSEC-2099-1", ["99.0"])]
    assert script.audit_latest_releases() == 1
    assert f"VULNERABLE, upgrade: flask {INSTALLED['flask']}: PYSEC-2099-1 (fixed in 99.0)" \
        in capsys.readouterr().out


def test_no_fix_yet_or_withdrawn_is_printed_not_failed(pypi, capsys):
    script, pages = pypi
    pages["flask"]["vulnerabilities"] = [advisory("GHSA-none", []),
                                         advisory("GHSA-gone", ["99.0"], withdrawn="2026-01-01")]
    assert script.audit_latest_releases() == 0
    out = capsys.readouterr().out
    assert "known, no fix released yet: flask" in out and "GHSA-gone" not in out


def test_a_package_older_than_its_latest_release_is_listed_as_not_audited(pypi, capsys):
    script, pages = pypi
    pages["flask"] = {"info": {"version": "99.0"},
                      "vulnerabilities": [advisory("PYSEC-2099-1", ["99.1"])]}
    assert script.audit_latest_releases() == 0
    out = capsys.readouterr().out
    assert f"flask {INSTALLED['flask']} (latest 99.0)" in out and "1 older not audited" in out


def test_a_page_that_cannot_be_read_fails_the_audit(pypi, capsys):
    script, pages = pypi
    del pages["flask"]
    assert script.audit_latest_releases() == 1
    assert "could not read 1 project page(s): flask" in capsys.readouterr().out
