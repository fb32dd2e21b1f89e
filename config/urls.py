"""Root URLs: pages, the REST API and its schema, admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from common.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI from drf-spectacular-sidecar's static files, its init script a separate
    # request: no CDN and no inline script or style, so it works offline under our CSP.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs.html"),
        name="api-docs",
    ),
    path("api/v1/", include("marketplace.urls_api")),
    path("api/v1/", include("billing.urls_api")),
    path("billing/", include("billing.urls")),
    path("", include("web.urls")),
    path("", include("web.urls_ui")),
    path("", include("notifications.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("marketplace.urls")),
]

# JSON under /api/, HTML pages elsewhere (common/views.py).
handler400 = "common.views.bad_request"
handler403 = "common.views.permission_denied"
handler404 = "common.views.page_not_found"
handler500 = "common.views.server_error"
