import contextlib
import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from factory_bridge.models import FailedMessage, OutboxEvent, RestockRequest
from factory_bridge.services import dlq

# The index shows how many messages are dead, at a glance.
admin.site.index_template = "admin/factory_bridge/index.html"


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PublishedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        return [("pending", "Pending"), ("published", "Published")]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "pending":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_type",
        "sku",
        "topic",
        "published_at",
        "attempts",
        "last_error",
    ]
    list_filter = [PublishedFilter, "event_type", "topic"]
    search_fields = ["=id", "sku"]


@admin.register(RestockRequest)
class RestockRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "product",
        "quantity",
        "status_badge",
        "requested_at",
        "fulfilled_at",
        "factory_job_id",
    ]
    list_filter = ["status", "factory", "product"]
    search_fields = ["=id", "product__sku", "factory_job_id", "sqs_message_id", "depletion_key"]
    list_select_related = ["product", "factory"]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: RestockRequest) -> str:
        colors = {"overdue": "#c62828", "failed": "#c62828", "fulfilled": "#2e7d32"}
        return format_html(
            '<strong style="color:{}">{}</strong>',
            colors.get(obj.status, "#444"),
            obj.get_status_display(),
        )


@admin.register(FailedMessage)
class FailedMessageAdmin(ReadOnlyAdmin):
    """Rows are a record of what reached the DLQ; staff act on them through the actions."""

    list_display = [
        "short_id",
        "status",
        "event_type",
        "sku",
        "short_error",
        "age",
        "times_dead",
    ]
    list_filter = ["status", "event_type", "sku"]
    search_fields = ["sku", "sqs_message_id", "fingerprint"]
    actions = ["redrive_selected", "discard_selected"]
    readonly_fields = [
        "fingerprint",
        "sqs_message_id",
        "status",
        "source_queue",
        "dlq",
        "event_type",
        "sku",
        "receive_count",
        "times_dead",
        "last_error",
        "first_seen_at",
        "last_seen_at",
        "redriven_at",
        "discarded_at",
        "pretty_body",
        "pretty_attributes",
    ]
    exclude = ["body", "attributes", "message_attributes"]

    @admin.display(description="message", ordering="sqs_message_id")
    def short_id(self, obj: FailedMessage) -> str:
        return obj.sqs_message_id[:8] + "…"

    @admin.display(description="error")
    def short_error(self, obj: FailedMessage) -> str:
        return obj.last_error[:80]

    @admin.display(description="age", ordering="first_seen_at")
    def age(self, obj: FailedMessage) -> str:
        seconds = int((timezone.now() - obj.first_seen_at).total_seconds())
        if seconds < 3600:
            return f"{seconds // 60} min"
        if seconds < 86400:
            return f"{seconds // 3600} h"
        return f"{seconds // 86400} d"

    @admin.display(description="body")
    def pretty_body(self, obj: FailedMessage) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.body))

    @admin.display(description="attributes")
    def pretty_attributes(self, obj: FailedMessage) -> str:
        both = {"system": obj.attributes, "message": obj.message_attributes}
        return format_html("<pre>{}</pre>", json.dumps(both, indent=2, ensure_ascii=False))

    @admin.action(description="Redrive selected messages to the source queue")
    def redrive_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = dlq.redrive_rows(list(queryset))
        if report.error:
            self.message_user(
                request,
                f"Redrive stopped: {report.error}. {len(report.moved)} moved before that.",
                messages.ERROR,
            )
            return
        summary = (
            f"Redriven: {len(report.moved)} moved, {len(report.failed)} failed, "
            f"{len(report.missing)} not found in the DLQ."
        )
        if report.skipped:
            summary += f" {report.skipped} skipped (not dead)."
        if report.missing and report.left.get("in_flight"):
            summary += f" The DLQ holds {dlq.held_elsewhere(report.left)}."
        level = messages.ERROR if report.failed or report.missing else messages.SUCCESS
        self.message_user(request, summary, level)

    @admin.action(description="Discard selected messages (kept here for audit)")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/factory_bridge/failedmessage/discard_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Discard failed messages?",
                    "rows": queryset,
                    "opts": self.model._meta,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        report = dlq.discard(rows=list(queryset))
        summary = f"Discarded {report.discarded} message(s); rows kept for audit."
        if report.skipped:
            summary += f" {report.skipped} skipped (not dead)."
        if report.missing:
            summary += (
                f" {len(report.missing)} not found or not deleted: they stay dead; "
                "try again in a minute."
            )
        if report.error:
            self.message_user(
                request, f"Discard stopped: {report.error}. {summary}", messages.ERROR
            )
            return None
        level = messages.WARNING if report.missing else messages.SUCCESS
        self.message_user(request, summary, level)
        return None


def _pretty(body: str) -> str:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if isinstance(parsed, dict) and isinstance(parsed.get("Message"), str):
        with contextlib.suppress(ValueError):
            parsed["Message"] = json.loads(parsed["Message"])
    return json.dumps(parsed, indent=2, ensure_ascii=False)
