"""The site's URLs plus a view that fails, for the 500 page's test."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as site


def boom(request: HttpRequest) -> HttpResponse:
    request.POST.get("refresh_token")  # the form was read, as a real view's is
    raise RuntimeError("an unexpected failure")


urlpatterns = [path("boom/", boom), *site]
