"""The reliability suites' figures in pytest's closing summary: `-s` is off in CI, and the figures
must show in its log whether the tests passed or failed. A test adds a figure line as a user
property named `figure` (`request.node.user_properties`; it is in the JUnit report too); the fault
suite's counts, summed over its tests (tests/reliability/fault_scenario.py), are one more line."""

from __future__ import annotations

import pytest

from tests.reliability.fault_scenario import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [value
             for outcome in ("passed", "failed")
             for report in terminalreporter.stats.get(outcome, [])
             if getattr(report, "when", "") == "call"
             for name, value in getattr(report, "user_properties", []) if name == "figure"]
    if FIGURES:
        lines.append("fault suite: " + ", ".join(
            f"{name}: {number}" for name, number in sorted(FIGURES.items())))
    if lines:
        terminalreporter.section("figures of the reliability suites")
        for line in lines:
            terminalreporter.write_line(line)
