from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse

from nudged.ops.dashboard import panels, selectors


def dashboard(request: HttpRequest) -> HttpResponse:
    """The last hour (or `?window=day`) of orders, stock, restocks, the relay and the DLQs."""
    name = request.GET.get("window", "hour")
    if name not in selectors.WINDOWS:
        return HttpResponseBadRequest(
            f"window must be one of: {', '.join(selectors.WINDOWS)}", content_type="text/plain"
        )
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "dashboard": panels.dashboard(selectors.window(name)),
        "windows": [("hour", "Last hour"), ("day", "Last day")],
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
