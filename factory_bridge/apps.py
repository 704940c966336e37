from django.apps import AppConfig


class FactoryBridgeConfig(AppConfig):
    name = "factory_bridge"
    verbose_name = "Factory bridge and events"

    def ready(self) -> None:
        from factory_bridge import aws, checks, cluster  # noqa: F401  (checks register themselves)

        aws.connect_signals()
        cluster.install_stop_handler()
