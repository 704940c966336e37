import contextlib
import json

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from factory_bridge.models import FailedMessage, OutboxEvent, RestockRequest
from factory_bridge.services import dlq, outbox
from nudged.admin import ReadOnlyAdmin

# The index shows how many messages are dead, at a glance.
admin.site.index_template = "admin/factory_bridge/index.html"


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        return [("pending", "Pending"), ("published", "Published"), ("dead", "Dead")]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "pending":
            return queryset.filter(published_at__isnull=True, dead_at__isnull=True)
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "dead":
            return queryset.filter(published_at__isnull=True, dead_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_type",
        "sku",
        "topic",
        "published_at",
        "dead_at",
        "attempts",
        "last_error",
    ]
    list_filter = [OutboxStateFilter, "event_type", "topic"]
    search_fields = ["=id", "sku"]
    actions = ["retry_dead_selected"]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('retry', opts)}")

    @admin.action(description="Retry selected dead events", permissions=["retry"])
    def retry_dead_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        revived = outbox.retry_dead(ids=queryset.values_list("pk", flat=True))
        for event in revived:
            self.log_change(
                request,
                event,
                f"Retried dead event after {event.attempts} attempts; "
                f"last error: {event.last_error[:200]}",
            )
        skipped = queryset.count() - len(revived)
        note = f" {skipped} selected event(s) were not dead and were left alone." if skipped else ""
        self.message_user(
            request,
            f"Retrying {len(revived)} dead event(s).{note}",
            messages.SUCCESS if revived else messages.WARNING,
        )


@admin.register(RestockRequest)
class RestockRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "product",
        "quantity",
        "status_badge",
        "last_error",
        "next_attempt_at",
        "requested_at",
        "factory_job_id",
    ]
    list_filter = ["status", "factory", "product"]
    search_fields = ["=id", "product__sku", "factory_job_id", "sqs_message_id", "depletion_key"]
    list_select_related = ["product", "factory"]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: RestockRequest) -> str:
        colors = {
            RestockRequest.Status.PENDING: "#b26a00",
            RestockRequest.Status.OVERDUE: "#c62828",
            RestockRequest.Status.FAILED: "#c62828",
            RestockRequest.Status.FULFILLED: "#2e7d32",
        }
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

    def has_redrive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("factory_bridge.redrive_failedmessage")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("factory_bridge.discard_failedmessage")

    def _log_outcome(
        self, request: HttpRequest, rows: list[FailedMessage], action: str, error: str = ""
    ) -> None:
        """Record in each message's history who acted on it and where it stands now."""
        now = dict(
            FailedMessage.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", "status")
        )
        for row in rows:
            outcome = FailedMessage.Status(now.get(row.pk, row.status)).label
            message = f"{action} from the admin; now: {outcome}"
            self.log_change(request, row, f"{message} ({error})" if error else message)

    @admin.action(
        description="Redrive selected messages to the source queue", permissions=["redrive"]
    )
    def redrive_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        rows = list(queryset)
        report = dlq.redrive_rows(rows)
        self._log_outcome(request, rows, "Redrive", report.error or "")
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

    @admin.action(
        description="Discard selected messages (kept here for audit)", permissions=["discard"]
    )
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
        rows = list(queryset)
        report = dlq.discard(rows=rows)
        self._log_outcome(request, rows, "Discard", report.error or "")
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
