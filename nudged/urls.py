from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from factory_bridge.apis import FactoryCallbackApi
from nudged.core.api import not_found as api_not_found
from nudged.ops.dashboard.views import dashboard
from nudged.ops.views import healthz, metrics
from shop import apis, legacy

api = [
    path("products/", apis.ProductListApi.as_view(), name="product-list"),
    path("products/<str:sku>/", apis.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<str:sku>/alerts/", apis.AlertCreateApi.as_view(), name="alert-create"),
    path("orders/", apis.order_create, name="order-create"),
    path("orders/<str:reference>/", apis.OrderDetailApi.as_view(), name="order-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's own start-up script comes from `docs/?script`, not inline: the
    # Content-Security-Policy allows no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]

legacy_api = [
    path("product/donut", legacy.product_donut, name="product-donut"),
    path("checkout", legacy.checkout, name="checkout"),
    re_path(r"^(?P<path>(product|checkout)(/.*)?)$", legacy.not_found),
]

urlpatterns = [
    # Staff only: admin_view sends anyone else to the admin's login page.
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/", include((api, "api"))),
    # Any other path under /api/, with or without a trailing slash: a JSON 404, not a
    # redirect (APPEND_SLASH cannot redirect a POST) and not an HTML page.
    re_path(r"^api(?:/|$)", api_not_found, name="api-not-found"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("factory/callbacks/<str:token>/", FactoryCallbackApi.as_view(), name="factory-callback"),
    path("", include((legacy_api, "legacy"))),
    path("", include("shop.urls")),
]
