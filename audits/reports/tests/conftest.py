from training.tests.conftest import ready  # noqa: F401  (the fixture, shared)
