"""SMS notices to clients, sent through a Messaging Service with the role number as sender.

The handover sends a notice by SMS where a contact has only a mobile (the CRM says so). Call:

    send_notice_sms(api, role_number="+15550100", to="+15557654321", body=text,
                    since=notice_created_at, check_first=notice_attempts > 0)
        -> SmsResult(status, sid, error_code, detail)

- ``status == "sent"``: Twilio accepted a new message (``sid``). That is not delivery:
  carrier failures, 30034 among them, come later as the Message's status, so follow it
  with `notice_sms_delivery(api, sid)` until it is final (the outbox does, see
  `rolekeeper.notices.outbox.settle_sms`).
- ``"already_sent"``: a message with this body from the role number to this contact since
  ``since`` exists already (an earlier attempt whose answer was lost); nothing was sent.
  Follow ``sid`` as for "sent".
- ``"refused"``: final, do not retry; ``error_code`` says why: 21610 the recipient opted out
  (replied STOP), 30034 the sender is not registered for US A2P 10DLC, others a bad number.
- `TwilioUnavailable` is raised when Twilio kept failing (429, 5xx, timeouts) for
  ``[twilio].retry_seconds``: the outcome may be unknown, so retry later with
  ``check_first=True``.

Messages POST has no idempotency key: after a 5xx or a timeout the message may or may not
exist, so before sending again the role number's recent Messages to that contact are listed
and a message with the same body counts as sent. 429 means Twilio did nothing: it is simply
retried with exponential backoff.

Which Message statuses are final. Twilio lists them at
https://www.twilio.com/docs/messaging/api/message-resource#message-status-values; its
OpenAPI spec (twilio_api_v2010.json, ``message_enum_status``) has the values: accepted,
scheduled, canceled, queued, sending, sent, failed, delivered, undelivered, receiving,
received, read, partially_delivered. For an outbound message:
- not final: "accepted" (the first status of a message created through a Messaging Service,
  as ours are), "scheduled", "queued" (the first without one; see
  https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks),
  "sending", and "sent": handed to the carrier. "sent" can also stay for good: "in some
  cases the status may remain 'sent' although the message was not actually delivered ...
  Twilio did not receive a status update from the network handling delivery"
  (https://www.twilio.com/help/faq/sms/why-are-my-messages-undelivered). Hence the
  outbox's grace for "sent" and its timeout for the rest.
- final, delivered: "delivered" (the carrier confirmed it), "read" (channels with read
  receipts).
- final, not delivered: "undelivered" (a delivery receipt said so), "failed" (it could not
  be sent), "canceled" (a scheduled message, canceled). ``error_code`` is "returned if the
  Message status is failed or undelivered" (the spec's description of the field), so it is
  read only then. Error 30034 (https://www.twilio.com/docs/api/errors/30034, the sender is
  not registered for US A2P 10DLC) arrives this way: the POST is accepted, the Message
  later turns "undelivered" with error_code 30034.
- "partially_delivered" is taken as not final (followed until the outbox's timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rolekeeper.backends.twilio import SentMessage, TwilioApi, TwilioRefused
from rolekeeper.log import get_logger

log = get_logger(__name__)

OPTED_OUT = 21610
UNREGISTERED_A2P = 30034
FINAL_ERRORS = frozenset({OPTED_OUT, UNREGISTERED_A2P})
# Final statuses of an outbound Message (see the module's note).
FAILED_STATUSES = frozenset({"failed", "undelivered", "canceled"})
DELIVERED_STATUSES = frozenset({"delivered", "read"})

SmsStatus = Literal["sent", "already_sent", "refused", "delivered", "pending"]


@dataclass(frozen=True)
class SmsResult:
    status: SmsStatus
    sid: str | None = None
    error_code: int | None = None
    detail: str = ""

    @property
    def final(self) -> bool:
        """No point in sending this notice again."""
        return self.status != "pending"

    @property
    def error(self) -> str:
        """What went wrong, for the store and the report: "Twilio error 30034: …"."""
        if self.error_code is None:
            return self.detail
        return f"Twilio error {self.error_code}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "sid": self.sid,
            "error_code": self.error_code,
            "detail": self.detail,
        }


def _describe(code: int | None, otherwise: str = "Twilio refused the message") -> str:
    if code == OPTED_OUT:
        return "the recipient opted out of messages from this number (replied STOP)"
    if code == UNREGISTERED_A2P:
        return "the sender is not registered for US A2P 10DLC (see README: A2P registration)"
    return otherwise


def _not_delivered(message: SentMessage) -> str:
    return _describe(
        message.error_code, message.error_message or f"Twilio reports it {message.status}"
    )


def _earlier(
    api: TwilioApi, role_number: str, to: str, body: str, since: datetime
) -> SentMessage | None:
    for message in api.recent_messages(from_=role_number, to=to, since=since):
        if message.body == body:
            return message
    return None


def _result_of_existing(message: SentMessage) -> SmsResult:
    if message.status in FAILED_STATUSES and message.error_code in FINAL_ERRORS:
        return SmsResult("refused", message.sid, message.error_code, _not_delivered(message))
    return SmsResult("already_sent", message.sid, None, message.status)


def send_notice_sms(
    api: TwilioApi,
    *,
    role_number: str,
    to: str,
    body: str,
    since: datetime,
    check_first: bool = False,
    messaging_service_sid: str | None = None,
) -> SmsResult:
    """Send one notice SMS at most once; see the module docstring for the contract.

    `since` is when this notice was first due (a lower bound for an earlier attempt's date);
    `check_first` looks for an earlier attempt before sending (pass True on any retry of the
    notice). The Messaging Service is ``[twilio].messaging_service_sid`` unless given.
    """
    service = messaging_service_sid or api.cfg.messaging_service_sid
    if check_first and (earlier := _earlier(api, role_number, to, body, since)) is not None:
        return _result_of_existing(earlier)

    def create() -> SentMessage:
        return api.create_message(
            from_=role_number, to=to, body=body, messaging_service_sid=service
        )

    try:
        message = api.create_once(create, lambda: _earlier(api, role_number, to, body, since))
    except TwilioRefused as exc:
        log.warning("notice SMS refused", code=exc.code, status=exc.status)
        return SmsResult(
            "refused", None, exc.code, _describe(exc.code, f"Twilio refused it: {exc.text}")
        )
    log.info("notice SMS sent", sid=message.sid)
    return SmsResult("sent", message.sid, message.error_code, message.status)


def notice_sms_delivery(api: TwilioApi, sid: str) -> SmsResult:
    """Where a sent notice got to, as Twilio says now (see the module's note on statuses):

    - ``"delivered"``: final, the carrier confirmed it (``detail``: delivered or read);
    - ``"refused"``: final, undelivered, failed or canceled; ``error_code`` is Twilio's
      (30034, 21610, carrier errors such as 30003) and ``detail`` what it means;
    - ``"pending"``: not final; ``detail`` is Twilio's status (accepted, queued, sending,
      sent, ...). "sent" may never change when the carrier returns no receipt: when that is
      good enough is the caller's decision.
    """
    message = api.fetch_message(sid)
    if message.status in FAILED_STATUSES:
        return SmsResult("refused", sid, message.error_code, _not_delivered(message))
    if message.status in DELIVERED_STATUSES:
        return SmsResult("delivered", sid, None, message.status)
    return SmsResult("pending", sid, None, message.status)
