"""Reproducible performance runs at a million patrons, each against its raw baseline (issue 14)."""
