"""Fakes of third-party services that tests drive through their official clients."""
