"""Back-in-stock alerts: double opt-in, suppression, and the one email when stock arrives.

An alert is asked for a sold-out donut. Its address gets one confirmation email with a
signed link, and nothing else until the link is followed. An arrival makes each confirmed
alert of the product due; the notify loop sends what is due (`send_due_mail`), each address
on its own: a permanent refusal fails that alert and suppresses its mailbox, a mail server
that is down leaves everything due, tried again with back-off for ALERT_GIVE_UP_AFTER.

Variants of one mailbox (case, `+tag`) are one subscription, and a suppressed mailbox (it
unsubscribed or bounced) gets no email at all, so the shop cannot be turned on anyone.

The same loop sends a pre-order's notice (ready, or cancelled) to the address the order gave,
once, with the same back-off and the same suppression list.
"""

import logging
import smtplib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.core import mail, signing
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.mail.backends.base import BaseEmailBackend
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from inventory.exceptions import (
    AddressSuppressed,
    AlertForProductInStock,
    AlertLimitReached,
    InvalidAlertLink,
    InvalidEmail,
    UnknownSku,
)
from inventory.models import Product, Promise, StockAlert, SuppressedAddress

logger = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "inventory.alert-unsubscribe"
CONFIRM_SALT = "inventory.alert-confirm"
# Addresses claimed and emailed per round: no transaction is held while they are sent.
ALERT_BATCH = 100
# A claim older than this belongs to a sender that died; its addresses are sent again.
CLAIM_SECONDS = 120
# Back-off of an email the mail server did not take: doubles per attempt, capped, so that
# an outage of hours costs a few dozen attempts, and mail goes out soon after it is back.
RETRY_FIRST_SECONDS = 30
RETRY_MAX_SECONDS = 900


def normalise_email(email: str) -> str:
    """The mailbox an address delivers to: lower case, without the local part's `+tag`."""
    local, _, domain = email.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}"


def subscribe_alert(*, sku: str, email: str) -> StockAlert:
    """Ask for one email when a sold-out product is back; its address confirms it first.

    A mailbox already waiting for the product keeps its one alert (and gets no second
    confirmation). Refused: a product in stock, a suppressed mailbox, and a mailbox that has
    had ALERT_MAILBOX_LIMIT new alerts in ALERT_MAILBOX_WINDOW.
    """
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidEmail(email) from exc
    product = Product.objects.filter(sku=sku).first()
    if product is None:
        raise UnknownSku(sku)
    if product.in_stock:
        raise AlertForProductInStock(product.sku, product.name)
    mailbox = normalise_email(email)
    if SuppressedAddress.objects.filter(mailbox=mailbox).exists():
        raise AddressSuppressed(email)
    now = timezone.now()
    existing = StockAlert.objects.filter(product=product, mailbox=mailbox, waiting=True).first()
    if existing is not None and not _confirmation_expired(existing, now):
        return existing
    _check_mailbox_limit(mailbox, now)
    try:
        with transaction.atomic():
            if existing is not None:
                StockAlert.objects.filter(pk=existing.pk, confirmed_at__isnull=True).update(
                    waiting=None, due_at=None, send_after=None, error="never confirmed"
                )
            alert = StockAlert.objects.create(
                product=product, email=email, mailbox=mailbox, due_at=now, send_after=now
            )
    except IntegrityError:
        # Another request subscribed the same mailbox at the same moment.
        return StockAlert.objects.get(product=product, mailbox=mailbox, waiting=True)
    logger.info("alert=%s subscribed sku=%s; confirmation due", alert.pk, sku)
    return alert


def _confirmation_expired(alert: StockAlert, now: datetime) -> bool:
    return alert.confirmed_at is None and alert.created_at < now - timedelta(
        seconds=settings.ALERT_CONFIRM_MAX_AGE
    )


def _check_mailbox_limit(mailbox: str, now: datetime) -> None:
    limit = settings.ALERT_MAILBOX_LIMIT
    if not limit:
        return
    window = timedelta(seconds=settings.ALERT_MAILBOX_WINDOW)
    recent = list(
        StockAlert.objects.filter(mailbox=mailbox, created_at__gte=now - window)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        wait = (recent[-1] + window - now).total_seconds()
        logger.warning("alert refused: mailbox over its limit of %s new alerts", limit)
        raise AlertLimitReached(max(1, int(wait) + 1))


def confirm_token(alert: StockAlert) -> str:
    return signing.dumps(alert.pk, salt=CONFIRM_SALT)


def unsubscribe_token(alert: StockAlert) -> str:
    return signing.dumps(alert.pk, salt=UNSUBSCRIBE_SALT)


class AlertLinks(Protocol):
    """The pages an alert's emails link to: the shop's, which inventory does not import."""

    def confirm(self, *, token: str) -> str: ...

    def unsubscribe(self, *, token: str) -> str: ...


_links: AlertLinks | None = None


def register_links(links: AlertLinks) -> None:
    """Name who builds the alert emails' links (the shop, once, when it starts)."""
    global _links
    _links = links


def links() -> AlertLinks:
    if _links is None:
        raise ImproperlyConfigured("no alert links registered: is the shop installed?")
    return _links


def confirm_url(alert: StockAlert) -> str:
    return links().confirm(token=confirm_token(alert))


def unsubscribe_url(alert: StockAlert) -> str:
    return links().unsubscribe(token=unsubscribe_token(alert))


def alert_from_confirm_token(*, token: str) -> StockAlert:
    """The waiting alert a confirmation link names; InvalidAlertLink when there is none."""
    try:
        alert_id = signing.loads(token, salt=CONFIRM_SALT, max_age=settings.ALERT_CONFIRM_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise InvalidAlertLink(
            "That confirmation link has expired; ask for the alert again on the storefront."
        ) from exc
    except signing.BadSignature as exc:
        raise InvalidAlertLink("That confirmation link is not valid.") from exc
    alert = StockAlert.objects.select_related("product").filter(pk=alert_id, waiting=True).first()
    if alert is None:
        raise InvalidAlertLink("That alert has ended; ask for it again on the storefront.")
    return alert


def alert_from_unsubscribe_token(*, token: str) -> StockAlert:
    """The alert an unsubscribe link names (it never expires); InvalidAlertLink otherwise."""
    try:
        alert_id = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature as exc:
        raise InvalidAlertLink("That unsubscribe link is not valid.") from exc
    alert = StockAlert.objects.select_related("product").filter(pk=alert_id).first()
    if alert is None:
        raise InvalidAlertLink("That unsubscribe link is not valid.")
    return alert


def confirm_alert(*, token: str) -> StockAlert:
    """Confirm the alert a signed link names: its address now hears when stock arrives.

    A product already back in stock ends the alert instead (its news is on the storefront).
    """
    alert = alert_from_confirm_token(token=token)
    now = timezone.now()
    if alert.product.in_stock:
        StockAlert.objects.filter(pk=alert.pk, waiting=True).update(
            waiting=None, due_at=None, send_after=None, error="back before it was confirmed"
        )
        logger.info("alert=%s confirmed after sku=%s was back: ended", alert.pk, alert.product.sku)
        alert.waiting = None
        return alert
    confirmed = StockAlert.objects.filter(
        pk=alert.pk, waiting=True, confirmed_at__isnull=True
    ).update(confirmed_at=now, due_at=None, send_after=None, attempts=0)
    if confirmed:
        logger.info("alert=%s confirmed sku=%s", alert.pk, alert.product.sku)
    alert.refresh_from_db(fields=["confirmed_at", "waiting"])
    return alert


def unsubscribe_alert(*, token: str) -> StockAlert:
    """End every alert of the mailbox a signed link names, and send that mailbox nothing more."""
    alert = alert_from_unsubscribe_token(token=token)
    suppress_mailbox(
        mailbox=alert.mailbox or normalise_email(alert.email),
        reason=SuppressedAddress.Reason.UNSUBSCRIBED,
        detail=f"link of alert {alert.pk}",
    )
    return alert


def suppress_mailbox(*, mailbox: str, reason: str, detail: str = "") -> int:
    """Put a mailbox on the suppression list and end its waiting alerts; return how many."""
    now = timezone.now()
    with transaction.atomic():
        SuppressedAddress.objects.get_or_create(
            mailbox=mailbox, defaults={"reason": reason, "detail": detail[:200]}
        )
        ended = StockAlert.objects.filter(mailbox=mailbox, waiting=True).update(
            waiting=None,
            due_at=None,
            send_after=None,
            claimed_until=None,
            **(
                {"unsubscribed_at": now}
                if reason == SuppressedAddress.Reason.UNSUBSCRIBED
                else {"failed_at": now, "error": detail[:200]}
            ),
        )
    logger.info("mailbox suppressed (%s): %s alert(s) ended", reason, ended)
    return ended


def record_arrival(*, sku: str) -> int:
    """Make each confirmed alert waiting for the product due; return how many.

    Recorded here, the notices outlive the arrival's queue message: the notify loop sends
    them whenever the mail server takes them.
    """
    now = timezone.now()
    due = StockAlert.objects.filter(
        product__sku=sku, waiting=True, confirmed_at__isnull=False, due_at__isnull=True
    ).update(due_at=now, send_after=now, attempts=0)
    return due


def send_due_mail(*, keep_going: Callable[[], bool] = lambda: True) -> int:
    """Send every email due (confirmations and back-in-stock alerts); return how many went.

    Addresses are claimed in batches by one conditional UPDATE, so a second sender (another
    worker) claims none of them, and no transaction is open while the emails go out.
    `keep_going` is asked before each email: when it says stop, the rest is left for the
    next sender. A mail server that is down ends the round; what it did not take waits.
    """
    _give_up_overdue()
    sent = 0
    finished = True
    while batch := _claim_batch():
        batch_sent, finished = _send_batch(batch, keep_going)
        sent += batch_sent
        if not finished:
            break
    if finished:
        sent += _send_promise_notices(keep_going)
    return sent


def _give_up_overdue() -> None:
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ALERT_GIVE_UP_AFTER)
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    given_up = StockAlert.objects.filter(free, waiting=True, due_at__lt=cutoff).update(
        waiting=None,
        failed_at=now,
        due_at=None,
        send_after=None,
        error=f"mail server did not take it within {settings.ALERT_GIVE_UP_AFTER} s",
    )
    if given_up:
        logger.warning("%s alert(s) given up after ALERT_GIVE_UP_AFTER", given_up)


def _claim_batch() -> list[StockAlert]:
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    suppressed = SuppressedAddress.objects.filter(mailbox=OuterRef("mailbox"))
    ids = list(
        StockAlert.objects.filter(free, waiting=True, send_after__lte=now)
        .exclude(Exists(suppressed))
        .order_by("send_after", "id")
        .values_list("id", flat=True)[:ALERT_BATCH]
    )
    if not ids:
        return []
    owner = uuid.uuid4().hex
    StockAlert.objects.filter(free, id__in=ids, waiting=True).update(
        claimed_until=now + timedelta(seconds=CLAIM_SECONDS), claimed_by=owner
    )
    return list(
        StockAlert.objects.select_related("product")
        .filter(id__in=ids, waiting=True, claimed_by=owner)
        .order_by("id")
    )


def _send_batch(batch: list[StockAlert], keep_going: Callable[[], bool]) -> tuple[int, bool]:
    """Send a claimed batch; return how many went and whether the round may go on."""
    connection = mail.get_connection()
    try:
        connection.open()
    except Exception as exc:
        _server_down(batch, exc)
        return 0, False
    sent = 0
    pending = list(batch)
    try:
        while pending:
            if not keep_going():
                _release(pending)
                return sent, False
            alert = pending.pop(0)
            try:
                _message(alert, connection).send()
            except smtplib.SMTPRecipientsRefused as refused:
                _refused(alert, refused)
                continue
            except Exception as exc:
                _server_down([alert, *pending], exc)
                return sent, False
            _sent(alert)
            sent += 1
    finally:
        connection.close()
    return sent, True


def _server_down(alerts: list[StockAlert], exc: Exception) -> None:
    """The server is down or broke the connection: nothing more goes this round."""
    logger.warning(
        "mail server failed at alert=%s: %s: %s; %s email(s) wait",
        alerts[0].pk,
        type(exc).__name__,
        exc,
        len(alerts),
    )
    _back_off(alerts, f"{type(exc).__name__}: {exc}")


def _sent(alert: StockAlert) -> None:
    now = timezone.now()
    done = {"due_at": None, "send_after": None, "attempts": 0, "claimed_until": None}
    if alert.confirmed_at is None:
        StockAlert.objects.filter(pk=alert.pk).update(**done)
        logger.info("alert=%s confirmation emailed sku=%s", alert.pk, alert.product.sku)
    else:
        StockAlert.objects.filter(pk=alert.pk).update(waiting=None, notified_at=now, **done)
        logger.info("alert=%s back-in-stock emailed sku=%s", alert.pk, alert.product.sku)


def _refused(alert: StockAlert, refused: smtplib.SMTPRecipientsRefused) -> None:
    """One recipient refused: permanently (5xx) fails the alert and suppresses the mailbox."""
    code, reason = next(iter(refused.recipients.values()), (0, b""))
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    error = f"refused by the mail server: {code} {text}"[:200]
    if code >= 500:
        StockAlert.objects.filter(pk=alert.pk).update(claimed_until=None)
        suppress_mailbox(
            mailbox=alert.mailbox or normalise_email(alert.email),
            reason=SuppressedAddress.Reason.BOUNCED,
            detail=error,
        )
        logger.warning("alert=%s hard bounce (%s): failed, mailbox suppressed", alert.pk, code)
    else:
        _back_off([alert], error)


def _back_off(alerts: list[StockAlert], error: str) -> None:
    now = timezone.now()
    for alert in alerts:
        delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**alert.attempts)
        StockAlert.objects.filter(pk=alert.pk).update(
            attempts=F("attempts") + 1,
            send_after=now + timedelta(seconds=delay),
            claimed_until=None,
            error=error[:200],
        )


def _release(alerts: list[StockAlert]) -> None:
    StockAlert.objects.filter(id__in=[a.pk for a in alerts]).update(claimed_until=None)


def _message(alert: StockAlert, connection: BaseEmailBackend) -> mail.EmailMessage:
    product = alert.product
    unsubscribe = unsubscribe_url(alert)
    if alert.confirmed_at is None:
        days = max(1, settings.ALERT_CONFIRM_MAX_AGE // 86400)
        subject = f"Confirm your alert for {product.name}"
        body = (
            f"Someone, we hope you, asked Nudged to email this address once when "
            f"{product.name} is back in stock.\n\n"
            f"To confirm, open this link within {days} day(s): {confirm_url(alert)}\n\n"
            "If it was not you, ignore this email: without confirmation nothing more comes.\n"
            f"To never get email from Nudged again: {unsubscribe}\n"
        )
    else:
        subject = f"{product.name} is back"
        body = (
            f"Good news: {product.name} is back in stock at Nudged.\n\n"
            f"Order it here: {settings.PUBLIC_BASE_URL}/\n\n"
            "You asked us to tell you once, so this is the only email about it.\n"
            f"To never get email from Nudged again: {unsubscribe}\n"
        )
    return mail.EmailMessage(
        subject=subject,
        body=body,
        to=[alert.email],
        connection=connection,
        # RFC 8058: a mail client may unsubscribe with one POST to the link, no page shown.
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def _send_promise_notices(keep_going: Callable[[], bool]) -> int:
    """Send the pre-order notices due, each claimed by one conditional UPDATE; return how many.

    A notice the mail server did not take within ALERT_GIVE_UP_AFTER is given up.
    """
    now = timezone.now()
    due = list(
        Promise.objects.select_related("product")
        .filter(notice_after__lte=now, notified_at__isnull=True)
        .order_by("notice_after", "pk")[:ALERT_BATCH]
    )
    if not due:
        return 0
    suppressed = set(
        SuppressedAddress.objects.filter(
            mailbox__in={normalise_email(p.email) for p in due}
        ).values_list("mailbox", flat=True)
    )
    connection = mail.get_connection()
    sent = 0
    try:
        connection.open()
        for notice in due:
            if not keep_going():
                break
            mine = Promise.objects.filter(pk=notice.pk, notice_after=notice.notice_after)
            if not mine.update(notice_after=now + timedelta(seconds=CLAIM_SECONDS)):
                continue  # another sender took it
            gone = now - (notice.settled_at or now) > timedelta(
                seconds=settings.ALERT_GIVE_UP_AFTER
            )
            if normalise_email(notice.email) in suppressed or gone:
                Promise.objects.filter(pk=notice.pk).update(notice_after=None)
                continue
            try:
                _notice(notice, connection).send()
            except smtplib.SMTPRecipientsRefused:
                logger.warning("promise=%s notice refused by the mail server", notice.pk)
                Promise.objects.filter(pk=notice.pk).update(notice_after=None)
                continue
            Promise.objects.filter(pk=notice.pk).update(notice_after=None, notified_at=now)
            logger.info("promise=%s %s notice emailed", notice.pk, notice.state)
            sent += 1
    except Exception as exc:
        logger.warning("mail server failed at pre-order notices: %s: %s", type(exc).__name__, exc)
        pending = Promise.objects.filter(
            pk__in=[p.pk for p in due], notified_at__isnull=True, notice_after__isnull=False
        )
        for notice in pending:
            delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**notice.notice_attempts)
            Promise.objects.filter(pk=notice.pk).update(
                notice_after=now + timedelta(seconds=delay),
                notice_attempts=F("notice_attempts") + 1,
            )
    finally:
        connection.close()
    return sent


def _notice(promise: Promise, connection: BaseEmailBackend) -> mail.EmailMessage:
    name = promise.product.name
    if promise.state == Promise.State.KEPT:
        subject = f"Your {name} is ready"
        body = (
            f"Your pre-order of {promise.quantity} × {name} came with its batch and is ready.\n\n"
            "Your receipt page shows it too.\n"
        )
    else:
        subject = f"Your pre-order of {name} was cancelled"
        body = (
            f"Sorry: your pre-order of {promise.quantity} × {name} was cancelled "
            f"({promise.reason}). Nothing is owed.\n\n"
            f"Today's donuts: {settings.PUBLIC_BASE_URL}/\n"
        )
    return mail.EmailMessage(subject=subject, body=body, to=[promise.email], connection=connection)


def purge_alerts(*, before: datetime) -> int:
    """Delete alerts made before `before` that have ended or were never confirmed.

    Confirmed alerts still waiting are kept, however old; the suppression list is never
    purged. The scheduled purge passes now less ALERT_RETENTION_DAYS. Returns how many.
    """
    deleted, _ = StockAlert.objects.filter(
        Q(waiting__isnull=True) | Q(confirmed_at__isnull=True), created_at__lt=before
    ).delete()
    logger.info("purged %s alert(s) made before %s", deleted, before.isoformat())
    return deleted
