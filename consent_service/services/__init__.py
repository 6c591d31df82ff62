"""Use cases, one module per capability. Each takes a session, the ServiceContext (context.py) and
what it needs, and commits once."""
