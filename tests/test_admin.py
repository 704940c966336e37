"""The read-only admin base: records the system writes are shown, never edited by hand."""

import pytest
from django.contrib import admin
from django.urls import reverse

from inventory.models import StockAdjustment
from nudged.core.admin import ReadOnlyAdmin
from nudged.core.models import OutboxEvent
from shop.models import Order

RECORDS = [OutboxEvent, StockAdjustment, Order]


@pytest.mark.parametrize("model", RECORDS, ids=lambda m: m.__name__)
def test_system_records_use_the_one_read_only_base(model):
    assert isinstance(admin.site._registry[model], ReadOnlyAdmin)


@pytest.mark.django_db
@pytest.mark.parametrize("model", RECORDS, ids=lambda m: m.__name__)
def test_system_records_cannot_be_added_or_deleted_in_the_admin(admin_client, model):
    opts = model._meta
    changelist = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    add = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))

    assert changelist.status_code == 200
    assert add.status_code == 403
    form = changelist.context["action_form"]  # None when no action is offered
    assert form is None or "delete_selected" not in dict(form.fields["action"].choices)
