"""``python -m tests.oidc_provider CONFIG``: bind 127.0.0.1 on a free port, migrate a fresh
database, register the client and the users of CONFIG, print ``ready ISSUER`` and serve."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(config_path: str) -> None:
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    config = json.loads(Path(config_path).read_text())
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    issuer = f"http://127.0.0.1:{server.server_address[1]}/o"
    # Read by settings.py: where the database lives, and the issuer every token names.
    os.environ["PROVIDER_DIR"] = str(Path(config_path).resolve().parent)
    os.environ["PROVIDER_ISSUER"] = issuer
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0, interactive=False)
    User = get_user_model()
    for user in config["users"]:
        User.objects.create_user(user["username"], user.get("email", ""), user["password"])
    client = config["client"]
    Application.objects.create(
        name="LLMOps governance (test)",
        client_id=client["id"],
        client_secret=client["secret"],  # hashed on save, as a real registration stores it
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=client["redirect_uri"],
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=False,
    )
    server.set_app(get_wsgi_application())
    print(f"ready {issuer}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
