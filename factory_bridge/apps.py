from django.apps import AppConfig


class FactoryBridgeConfig(AppConfig):
    name = "factory_bridge"
    verbose_name = "Factory bridge and events"

    def ready(self) -> None:
        from factory_bridge import aws, receivers

        aws.connect_signals()
        receivers.connect()
