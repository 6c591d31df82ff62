"""Audit the installed dependencies (.venv, as `pip install -e '.[test]'` made it) for known
vulnerabilities with pip-audit, which asks PyPI's JSON API about each package's exact version.

Fails (exit 1) on a vulnerability that has a fixed version; one with no fix yet is printed, not
failed. Exit 3, with the reason on one line, when the vulnerability service cannot be asked from
here (PyPI unreachable, or a mirror that does not serve /pypi/NAME/VERSION/json): `.ci/run` then
marks the step skipped instead of passing an audit that audited nothing.

Usage: .venv/bin/python scripts/audit_dependencies.py [--probe]   (--probe: only the exit 3 check)
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

UNAVAILABLE = 3
PROBE_PACKAGE = "flask"  # installed by every install of the service
PYPI = "https://pypi.org/pypi/{name}/{version}/json"


def vulnerability_service_problem() -> str | None:
    """None when PyPI answers for an installed package's exact version, else why not."""
    url = PYPI.format(name=PROBE_PACKAGE, version=version(PROBE_PACKAGE))
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:  # noqa: S310 - a fixed https URL
            json.load(answer)["vulnerabilities"]  # the field pip-audit reads
    except urllib.error.HTTPError as error:
        return (f"PyPI's JSON API answers {error.code} for {url}, so pip-audit can audit no "
                "package from here (the simple index works, the vulnerability data does not)")
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        return f"PyPI's JSON API cannot be reached ({error}), so pip-audit cannot run here"
    except (ValueError, KeyError):
        return f"{url} did not answer PyPI's JSON with a `vulnerabilities` field"
    return None


def main(arguments: list[str]) -> int:
    problem = vulnerability_service_problem()
    if problem:
        print(problem)
        return UNAVAILABLE
    if arguments == ["--probe"]:
        return 0
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
