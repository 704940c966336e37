from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.storefront, name="storefront"),
    path("order/", views.order, name="order"),
    path("alerts/", views.alert, name="alert"),
    path("alerts/unsubscribe/<str:token>/", views.unsubscribe, name="alert-unsubscribe"),
]
