"""The transactional outbox: a Celery job is a row written in the same transaction as the change
that caused it, so a crash between commit and dispatch loses nothing; a relay sends what is
pending. Infrastructure only (one model, no business rule), on floor 0 with the rest of ``common``.
"""
