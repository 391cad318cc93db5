"""The training app's ``ready`` project: a tiny base model, an approved dataset version, the roles."""

from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)
