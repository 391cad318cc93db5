"""The provider's pages: its login form, and django-oauth-toolkit's authorization, token and
OpenID Connect endpoints (discovery, JWKS, userinfo) under /o/."""

from django.contrib.auth.views import LoginView
from django.urls import include, path
from oauth2_provider import urls as oauth2_urls

urlpatterns = [
    path("login/", LoginView.as_view(template_name="provider/login.html"), name="login"),
    path("o/", include((oauth2_urls.base_urlpatterns + oauth2_urls.oidc_urlpatterns, "oauth2_provider"))),
]
