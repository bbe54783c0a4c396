"""Oscar's URLs at the root, as its guide has them, and its static and media files
served by Django itself (a test shop has no web server in front for them)."""

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from django.views.static import serve as serve_media

urlpatterns = [
    path("i18n/", include("django.conf.urls.i18n")),
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    re_path(r"^media/(?P<path>.*)$", serve_media, {"document_root": settings.MEDIA_ROOT}),
    path("", include(apps.get_app_config("oscar").urls[0])),
]
