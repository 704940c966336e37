from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "nudged.core"
    label = "core"
    verbose_name = "Outbox"
