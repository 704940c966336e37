from django import template

register = template.Library()


@register.filter
def krw(value: int) -> str:
    """Format a won amount with thousands separators: 19900 → 19,900."""
    return f"{int(value):,}"


@register.filter
def ago(timesince: str) -> str:
    """Turn Django's `timesince` into "just now" under a minute, else "N minutes ago"."""
    return "just now" if timesince.startswith("0\xa0minutes") else f"{timesince} ago"
