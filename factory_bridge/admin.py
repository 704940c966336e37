import contextlib
import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from factory_bridge.models import DlqJob, FailedMessage, RestockRequest
from factory_bridge.services import dlq_jobs, outbox
from inventory import admin as inventory_admin
from inventory.models import Product
from nudged.core.admin import ReadOnlyAdmin
from nudged.core.models import OutboxEvent

# The index shows how many messages are dead, at a glance.
admin.site.index_template = "admin/factory_bridge/index.html"


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("pending", "Pending"), ("published", "Published"), ("dead", "Dead")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
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
        # Colours in nudged/admin.css: the Content-Security-Policy allows no inline style.
        kinds: dict[str, str] = {
            RestockRequest.Status.PENDING: "waiting",
            RestockRequest.Status.OVERDUE: "alert",
            RestockRequest.Status.FAILED: "alert",
            RestockRequest.Status.FULFILLED: "ok",
        }
        return format_html(
            '<strong class="status-{}">{}</strong>',
            kinds.get(obj.status, "other"),
            obj.get_status_display(),
        )


class RestockInline(admin.TabularInline):
    model = RestockRequest
    fk_name = "product"
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "id",
        "status",
        "quantity",
        "created_at",
        "requested_at",
        "factory_job_id",
        "attempts",
        "reorders",
        "next_attempt_at",
        "last_error",
    )
    verbose_name_plural = "Restock requests in progress or failed"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RestockRequest]:
        statuses = [*RestockRequest.OPEN, RestockRequest.Status.FAILED]
        return super().get_queryset(request).filter(status__in=statuses)

    def has_add_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        return False


admin.site.unregister(Product)


@admin.register(Product)
class ProductAdmin(inventory_admin.ProductAdmin):
    """inventory's product pages, with the product's restocks in progress or failed."""

    inlines = [
        inventory_admin.ReorderDecisionInline,
        RestockInline,
        inventory_admin.StockAdjustmentInline,
    ]


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
        "last_job",
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

    @admin.display(description="last operation")
    def last_job(self, obj: FailedMessage) -> str:
        job = obj.jobs.order_by("-created_at", "-id").first()
        if job is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>, {}: {}',
            reverse("admin:factory_bridge_dlqjob_change", args=[job.pk]),
            job,
            timezone.localtime(job.finished_at or job.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            job.outcome or "not over yet",
        )

    def _queue(self, request: HttpRequest, rows: QuerySet, action: str) -> None:
        job = dlq_jobs.queue_job(action=action, rows=list(rows), user_id=request.user.pk)
        self.message_user(
            request,
            format_html(
                '{} of {} message(s) queued as <a href="{}">{}</a>: the cluster runs it in the '
                "background; its page, and each message's page, show the outcome when it is over.",
                job.get_action_display(),
                rows.count(),
                reverse("admin:factory_bridge_dlqjob_change", args=[job.pk]),
                job,
            ),
            messages.INFO,
        )

    @admin.action(
        description="Redrive selected messages to the source queue", permissions=["redrive"]
    )
    def redrive_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._queue(request, queryset, DlqJob.Action.REDRIVE)

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
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                },
            )
        self._queue(request, queryset, DlqJob.Action.DISCARD)
        return None


@admin.register(DlqJob)
class DlqJobAdmin(ReadOnlyAdmin):
    """Redrives and discards staff asked for: where each stands, and what came of it."""

    list_display = [
        "__str__",
        "action",
        "status",
        "requested_by",
        "outcome",
        "created_at",
        "finished_at",
    ]
    list_filter = ["action", "status"]
    fields = readonly_fields = (
        "action",
        "status",
        "requested_by",
        "outcome",
        "created_at",
        "started_at",
        "finished_at",
        "failed_messages",
    )
    list_select_related = ["requested_by"]

    @admin.display(description="messages")
    def failed_messages(self, obj: DlqJob) -> str:
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (reverse("admin:factory_bridge_failedmessage_change", args=[m.pk]), m)
                for m in obj.messages.all()
            ),
        )

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Whoever may see the failed messages may see what was done to them.
        return request.user.has_perm("factory_bridge.view_failedmessage")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)


def _pretty(body: str) -> str:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if isinstance(parsed, dict) and isinstance(parsed.get("Message"), str):
        with contextlib.suppress(ValueError):
            parsed["Message"] = json.loads(parsed["Message"])
    return json.dumps(parsed, indent=2, ensure_ascii=False)
