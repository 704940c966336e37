from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"

    def ready(self) -> None:
        # Imported once the models are loaded, as Django requires of apps.py.
        from inventory import alerts, events, promises
        from shop.ports import AlertPages, OrdersOfPromises
        from shop.sales import OrderLedger

        events.register_sales_ledger(OrderLedger())
        promises.register_pre_orders(OrdersOfPromises())
        alerts.register_links(AlertPages())
