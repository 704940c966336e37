from django import template

register = template.Library()


@register.filter
def krw(value: int) -> str:
    """Format a won amount with thousands separators: 19900 → 19,900."""
    return f"{int(value):,}"
