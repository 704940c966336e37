from django import template

from factory_bridge.services.dlq import dead_count

register = template.Library()


@register.simple_tag
def dead_messages() -> int:
    """How many failed messages sit in the dead-letter queue now."""
    return dead_count()
