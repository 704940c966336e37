"""Back-in-stock alerts: subscribing, unsubscribing, and the one email when stock arrives."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core import mail, signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from inventory.exceptions import InvalidEmail, UnknownSku
from inventory.models import Product, StockAlert

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "inventory.alert-unsubscribe"
# Addresses claimed and emailed per round: no transaction is held while they are sent.
ALERT_BATCH = 100
# A claim older than this belongs to a sender that died; its addresses are sent again.
CLAIM_SECONDS = 120


def subscribe_alert(*, sku: str, email: str) -> StockAlert:
    """Ask for one email when the product is back; an address already waiting keeps its alert."""
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidEmail(email) from exc
    product = Product.objects.filter(sku=sku).first()
    if product is None:
        raise UnknownSku(sku)
    try:
        with transaction.atomic():
            alert, created = StockAlert.objects.get_or_create(
                product=product, email__iexact=email, waiting=True, defaults={"email": email}
            )
    except IntegrityError:
        # Another request subscribed the same address at the same moment.
        alert, created = StockAlert.objects.get(product=product, email=email, waiting=True), False
    if created:
        logger.info("alert=%s subscribed sku=%s", alert.pk, sku)
    return alert


def unsubscribe_token(alert: StockAlert) -> str:
    return signing.dumps(alert.pk, salt=UNSUBSCRIBE_SALT)


def unsubscribe_url(alert: StockAlert) -> str:
    path = reverse("shop:alert-unsubscribe", kwargs={"token": unsubscribe_token(alert)})
    return f"{settings.PUBLIC_BASE_URL}{path}"


def unsubscribe_alert(*, token: str) -> StockAlert | None:
    """End every alert still waiting for the address of the alert a signed link names.

    Returns that alert, or None when the link is not one of ours.
    """
    try:
        alert_id = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    alert = StockAlert.objects.select_related("product").filter(pk=alert_id).first()
    if alert is None:
        return None
    ended = StockAlert.objects.filter(email__iexact=alert.email, waiting=True).update(
        waiting=None, unsubscribed_at=timezone.now()
    )
    logger.info("alert=%s unsubscribed, %s alert(s) ended", alert.pk, ended)
    return alert


def send_back_in_stock(*, sku: str) -> int:
    """Email each address waiting for the product once; return how many were sent.

    Addresses are claimed in batches by one conditional UPDATE, so a second sender (a
    duplicate delivery, another worker) claims none of them, and no transaction is open
    while the emails go out. A send that fails leaves the rest of its batch unclaimed and
    raises: the event is retried and only the addresses still waiting are emailed.
    """
    product = Product.objects.filter(sku=sku).first()
    if product is None:
        return 0
    sent = 0
    while batch := _claim_batch(product):
        sent += _send_batch(product, batch)
    return sent


def _claim_batch(product: Product) -> list[StockAlert]:
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    ids = list(
        StockAlert.objects.filter(free, product=product, waiting=True)
        .order_by("id")
        .values_list("id", flat=True)[:ALERT_BATCH]
    )
    if not ids:
        return []
    owner = uuid.uuid4().hex
    StockAlert.objects.filter(free, id__in=ids, waiting=True).update(
        claimed_until=now + timedelta(seconds=CLAIM_SECONDS), claimed_by=owner
    )
    return list(StockAlert.objects.filter(id__in=ids, waiting=True, claimed_by=owner))


def _send_batch(product: Product, batch: list[StockAlert]) -> int:
    done: list[int] = []
    try:
        with mail.get_connection() as connection:
            for alert in batch:
                _message(product, alert, connection).send()
                done.append(alert.pk)
    except Exception:
        StockAlert.objects.filter(id__in=[a.pk for a in batch if a.pk not in done]).update(
            claimed_until=None
        )
        raise
    finally:
        StockAlert.objects.filter(id__in=done).update(
            waiting=None, notified_at=timezone.now(), claimed_until=None
        )
        if done:
            logger.info("back-in-stock sku=%s emailed %s address(es)", product.sku, len(done))
    return len(done)


def _message(product: Product, alert: StockAlert, connection: object) -> mail.EmailMessage:
    body = (
        f"Good news: {product.name} is back in stock at Nudged.\n\n"
        f"Order it here: {settings.PUBLIC_BASE_URL}/\n\n"
        "You asked us to tell you once, so this is the only email about it.\n"
        f"To stop every other back-in-stock alert for this address: {unsubscribe_url(alert)}\n"
    )
    return mail.EmailMessage(
        subject=f"{product.name} is back",
        body=body,
        to=[alert.email],
        connection=connection,
        headers={"List-Unsubscribe": f"<{unsubscribe_url(alert)}>"},
    )
