"""The product's URLs and the baseline view of bench/orders.py."""

from django.urls import path

from bench.baseline import create_order
from nudged.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    path("bench/baseline/orders/", create_order, name="baseline-order-create"),
    *product_urlpatterns,
]
