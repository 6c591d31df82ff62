"""Audit the installed dependencies (.venv, as `pip install -e '.[test]'` made it) for known
vulnerabilities with pip-audit, which asks PyPI's JSON API about each package's exact version.

Where PyPI's per-version pages (/pypi/NAME/VERSION/json) are not served but its project pages
(/pypi/NAME/json) are, as on the machines this project is built on, the same advisories are read
from the project pages instead. PyPI gives a project page's `vulnerabilities` for the latest release
only, so a package installed at its latest release is audited, and one installed at an older release
cannot be: it is listed as not audited, with its latest release, and the summary counts both.

Fails (exit 1) on a vulnerability that has a fixed version; one with no fix yet is printed, not
failed. Exit 3, with the reason on one line, when no vulnerability data can be read from here
(PyPI unreachable): `.ci/run` then marks the step skipped instead of passing an audit that audited
nothing.

Usage: .venv/bin/python scripts/audit_dependencies.py [--probe]   (--probe: only the exit 3 check)
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distributions, version
from pathlib import Path
from typing import Any

UNAVAILABLE = 3
PROBE_PACKAGE = "flask"  # installed by every install of the service
PYPI = "https://pypi.org/pypi/{name}/{version}/json"
PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"
THIS_PROJECT = "consent-service"  # installed editable, not from PyPI


def _read(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=20) as answer:  # noqa: S310 - a fixed https URL
        page: dict[str, Any] = json.load(answer)
    if "vulnerabilities" not in page:  # the field the audit reads
        raise KeyError("vulnerabilities")
    return page


def service_problem(url: str) -> str | None:
    """None when `url` answers PyPI's JSON with a `vulnerabilities` field, else why not."""
    try:
        _read(url)
    except urllib.error.HTTPError as error:
        return f"PyPI's JSON API answers {error.code} for {url}"
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        return f"PyPI's JSON API cannot be reached ({error})"
    except (ValueError, KeyError):
        return f"{url} did not answer PyPI's JSON with a `vulnerabilities` field"
    return None


def main(arguments: list[str]) -> int:
    per_version = service_problem(PYPI.format(name=PROBE_PACKAGE, version=version(PROBE_PACKAGE)))
    per_project = per_version and service_problem(PYPI_PROJECT.format(name=PROBE_PACKAGE))
    if per_version and per_project:
        print(f"{per_version}; {per_project}: no vulnerability data can be read from here")
        return UNAVAILABLE
    if arguments == ["--probe"]:
        return 0
    if per_version:
        print(f"{per_version}, so pip-audit cannot run; reading PyPI's project pages instead")
        return audit_latest_releases()
    pip_audit = Path(sys.executable).with_name("pip-audit")
    run = subprocess.run([str(pip_audit), "--skip-editable", "--format", "json",  # noqa: S603
                          "--progress-spinner", "off"], capture_output=True, text=True,
                         check=False, timeout=600)
    try:
        report = json.loads(run.stdout)
    except ValueError:
        print(f"pip-audit failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
        return 1
    fixable, unfixed = [], []
    for dependency in report.get("dependencies", []):
        for found in dependency.get("vulns", []):
            line = (f"{dependency['name']} {dependency['version']}: {found['id']} "
                    f"(fixed in {', '.join(found['fix_versions']) or 'no release yet'})")
            (fixable if found["fix_versions"] else unfixed).append(line)
    audited = len(report.get("dependencies", []))
    for line in unfixed:
        print(f"known, no fix released yet: {line}")
    for line in fixable:
        print(f"VULNERABLE, upgrade: {line}")
    # pip-audit exits 0 when it skipped a package it could not look up: here that is a failure
    skipped = [f"{d['name']}: {d['skip_reason']}" for d in report.get("dependencies", [])
               if d.get("skip_reason")]
    if skipped:
        print(f"pip-audit could not audit {len(skipped)} dependencies: " + "; ".join(skipped[:10]))
        return 1
    print(f"pip-audit: {audited} dependencies audited, {len(fixable)} vulnerable with a fix, "
          f"{len(unfixed)} with no fix yet")
    return 1 if fixable else 0


def audit_latest_releases() -> int:
    """The audit from PyPI's project pages: each installed distribution's page, whose
    `vulnerabilities` are those of the latest release (see the module's docstring)."""
    installed = {d.metadata["Name"].lower(): d.version for d in distributions()
                 if d.metadata["Name"] and d.metadata["Name"].lower() != THIS_PROJECT}

    def page(name: str) -> tuple[str, dict[str, Any] | None, str]:
        try:
            return name, _read(PYPI_PROJECT.format(name=name)), ""
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError) as error:
            return name, None, str(error)

    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(page, sorted(installed)))
    fixable, unfixed, older, unread = [], [], [], []
    for name, found, error in pages:
        if found is None:
            unread.append(f"{name}: {error}")
            continue
        latest = found["info"]["version"]
        if latest != installed[name]:
            older.append(f"{name} {installed[name]} (latest {latest})")
            continue
        for advisory in found["vulnerabilities"]:
            if advisory.get("withdrawn"):
                continue
            fixes = advisory.get("fixed_in") or []
            line = (f"{name} {latest}: {advisory['id']} "
                    f"(fixed in {', '.join(fixes) or 'no release yet'})")
            (fixable if fixes else unfixed).append(line)
    for line in unfixed:
        print(f"known, no fix released yet: {line}")
    for line in fixable:
        print(f"VULNERABLE, upgrade: {line}")
    if older:
        print(f"not audited, older than their latest release (PyPI's project page has advisories "
              f"for the latest release only): {'; '.join(older)}")
    if unread:
        print(f"could not read {len(unread)} project page(s): " + "; ".join(unread[:10]))
        return 1
    audited = len(pages) - len(older)
    print(f"PyPI project pages: {audited} of {len(pages)} dependencies audited (installed at their "
          f"latest release), {len(older)} older not audited; {len(fixable)} vulnerable with a fix, "
          f"{len(unfixed)} with no fix yet")
    return 1 if fixable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
