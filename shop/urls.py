from django.urls import path

from shop import views

app_name = "shop"

urlpatterns = [
    path("", views.storefront, name="storefront"),
    path("order/", views.order, name="order"),
    path("basket/", views.basket, name="basket"),
    path("basket/add/", views.add_to_basket, name="basket-add"),
    path("basket/remove/", views.remove_from_basket, name="basket-remove"),
    path("basket/order/", views.order_basket, name="basket-order"),
    path("orders/<str:reference>/", views.receipt, name="receipt"),
    path("alerts/", views.alert, name="alert"),
    path("alerts/confirm/<str:token>/", views.confirm, name="alert-confirm"),
    path("alerts/unsubscribe/<str:token>/", views.unsubscribe, name="alert-unsubscribe"),
]
