"""Top floor: settings, URL routing, WSGI/ASGI entry points and the Celery app.

Nothing here holds business logic; it wires the apps together. No app imports ``config``: they
reach the Celery app through ``common.tasks`` (which loads the module that ``CELERY_APP_MODULE``
names) and everything else through Django's settings. The Celery app is not imported here, so
that ``manage.py`` commands which dispatch no task (``check``, ``migrate``) do not pay for it.
"""
