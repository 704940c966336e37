from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.storefront, name="storefront"),
    path("order/", views.order, name="order"),
    path("orders/<str:reference>/", views.receipt, name="receipt"),
    path("alerts/", views.alert, name="alert"),
    path("alerts/confirm/<str:token>/", views.confirm, name="alert-confirm"),
    path("alerts/unsubscribe/<str:token>/", views.unsubscribe, name="alert-unsubscribe"),
]
