"""Delivering queued mail: the chosen backend, the outbox sender, sending right after a commit."""
