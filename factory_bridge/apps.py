from django.apps import AppConfig


class FactoryBridgeConfig(AppConfig):
    name = "factory_bridge"
    verbose_name = "Factory bridge and events"

    def ready(self) -> None:
        from django.core import checks

        from factory_bridge import aws, receivers
        from factory_bridge.checks import check_outbox_settings

        aws.connect_signals()
        receivers.connect()
        checks.register(check_outbox_settings)
