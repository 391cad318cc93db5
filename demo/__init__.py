"""The demo organisation's story: one complete lifecycle played through the real services.

An app of its own on the top floor (under ``config`` only, see ``.importlinter``): the story needs the
registry, training, serving, the model checks, privacy and reports, and only the top floor may import
all of them. ``governance`` keeps the plain ``seed_demo``; this app's command of the same name extends it
with ``--story`` (it is listed before ``governance`` in ``INSTALLED_APPS``, so Django runs this one).
"""
