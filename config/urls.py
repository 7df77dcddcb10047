from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from accounts_pool.api.main import api, unknown_path
from accounts_pool.views import relay

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/v1/(?P<rest>.*)$", unknown_path),
    # The relay (DESIGN.md 4.4) for runserver; the relay process (Procfile: relay) serves the
    # same exchange from config/asgi.py without Django's request machinery.
    re_path(r"^relay/anthropic/(?P<rest>.*)$", relay.relay, name="relay"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("accounts_pool.urls")),
]
