"""The reliability suites' figures in pytest's closing summary: `-s` is off in CI, and the soak's
requests, latencies and memory must show in its log whether the test passed or failed. A test adds
a figure as a user property named `figure` (`request.node.user_properties`); it is printed here and
is in the JUnit report too."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [(report.nodeid, value)
             for outcome in ("passed", "failed")
             for report in terminalreporter.stats.get(outcome, [])
             if getattr(report, "when", "") == "call"
             for name, value in getattr(report, "user_properties", []) if name == "figure"]
    if lines:
        terminalreporter.section("figures of the reliability suites")
        for _nodeid, line in lines:
            terminalreporter.write_line(line)
