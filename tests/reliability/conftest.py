"""The fault suite's figures (tests/reliability/fault_scenario.py), printed after the run."""

from __future__ import annotations

import pytest

from tests.reliability.fault_scenario import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_line("fault suite: " + ", ".join(
            f"{name}: {number}" for name, number in sorted(FIGURES.items())))
