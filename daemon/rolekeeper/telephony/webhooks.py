"""The ASGI app of `rolekeeper webhooks`: Twilio's voice and messaging requests → TwiML.

Stateless: every request reads the store, so any number of instances can answer behind a
load balancer and a holder change is followed by the next call. Every request but
``GET /healthz`` must carry a valid ``X-Twilio-Signature`` for the URL Twilio called, which is
``[twilio].public_url`` + path + query (not the Host this server sees: it may sit behind a
reverse proxy); anything else gets 403.

Routes (POST, form-encoded, relative to the public URL):
  /voice                   a call to a role number (or to the access number)
  /voice/screen            the holder's leg: whisper who calls, ask for 1
  /voice/screened          the holder's key press
  /voice/dialed            the call to the holder ended: voicemail unless it was taken
  /voice/recorded          the caller finished the voicemail
  /voice/recording         recording status callback → mail to the role mailbox
  /voice/transcription     transcription callback → mail to the role mailbox
  /voice/access/pin        the access number: PIN entered (refusals counted, lockout)
  /voice/access/dial       the access number: client number entered
  /sms                     an SMS to a role number: forwarded to the holder, copied by mail
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from rolekeeper.clock import utcnow
from rolekeeper.config import Settings, TwilioSettings
from rolekeeper.domain import InvalidValue, normalise_phone
from rolekeeper.log import get_logger
from rolekeeper.store.db import transaction
from rolekeeper.telephony import lockout, routing, twiml
from rolekeeper.telephony.mailcopy import queue_role_mail

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 64 * 1024
XML = b"application/xml; charset=utf-8"


class _Form(dict[str, list[str]]):
    """POST parameters, repeated keys kept (the signature covers every value)."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def get1(self, name: str) -> str:
        values = self.get(name)
        return values[0] if values else ""


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    form: _Form

    def __getitem__(self, name: str) -> str:
        return self.form.get1(name)


Handler = Callable[[Request], str]


class WebhookApp:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        from rolekeeper.telephony.numbers import twilio_of

        cfg = twilio_of(settings)
        assert cfg.auth_token is not None and cfg.public_url is not None
        self.settings = settings
        self.cfg: TwilioSettings = cfg
        self.public_url = cfg.public_url
        self.sessions = sessions
        self._validator = RequestValidator(cfg.auth_token.get_secret_value())
        # Keys calls that passed the PIN (HMAC of the CallSid), so /voice/access/dial needs it.
        self._access_key = hashlib.sha256(
            b"rolekeeper-access:" + cfg.auth_token.get_secret_value().encode()
        ).digest()
        self.routes: dict[str, Handler] = {
            "/voice": self.voice,
            "/voice/screen": self.screen,
            "/voice/screened": self.screened,
            "/voice/dialed": self.dialed,
            "/voice/recorded": self.recorded,
            "/voice/recording": self.recording,
            "/voice/transcription": self.transcription,
            "/voice/access/pin": self.access_pin,
            "/voice/access/dial": self.access_dial,
            "/sms": self.sms,
        }

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain")
            return
        handler = self.routes.get(path)
        if handler is None:
            await _respond(send, 404, b"not found\n", b"text/plain")
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"POST only\n", b"text/plain")
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, b"too large\n", b"text/plain")
            return
        form = _Form(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
        raw_query = scope.get("query_string", b"").decode("latin-1")
        url = self.public_url + path + (f"?{raw_query}" if raw_query else "")
        signature = _header(scope, b"x-twilio-signature")
        if not signature or not self._validator.validate(url, form, signature):
            log.warning("webhook refused: bad or missing signature", path=path)
            await _respond(send, 403, b"forbidden\n", b"text/plain")
            return
        query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        request = Request(path, query, form)
        try:
            # The store may wait for a lock; keep the event loop free for other calls.
            document = await asyncio.to_thread(handler, request)
        except Exception:
            log.exception("webhook failed", path=path)
            await _respond(send, 500, b"error\n", b"text/plain")
            return
        await _respond(send, 200, document.encode(), XML)

    # --- helpers -------------------------------------------------------------------------

    def url(self, path: str, **query: str) -> str:
        return self.public_url + path + (f"?{urlencode(query)}" if query else "")

    def _say(self, text: str) -> str:
        return twiml.goodbye(text, self.cfg.webhooks.language)

    def _route(self, request: Request) -> routing.RoleRoute | None:
        with self.sessions() as session:
            return routing.role_route(session, key=request.query.get("role", ""))

    def _voicemail(self, route: routing.RoleRoute) -> str:
        hooks = self.cfg.webhooks
        return twiml.voicemail(
            greeting=f"You have reached {route.name}. Please leave a message after the tone.",
            language=hooks.language,
            recorded_url=self.url("/voice/recorded", role=route.key),
            recording_url=self.url("/voice/recording", role=route.key),
            transcription_url=(
                self.url("/voice/transcription", role=route.key) if hooks.transcribe else None
            ),
            max_seconds=hooks.voicemail_max_seconds,
        )

    def _access_token(self, call_sid: str) -> str:
        return hmac.new(self._access_key, call_sid.encode(), hashlib.sha256).hexdigest()[:32]

    def _queue_mail(self, role_key: str, key: str, subject: str, body: str) -> None:
        with transaction(self.sessions) as session:
            queue_role_mail(
                session, role_key=role_key, key=key, subject=subject, body=body, now=utcnow()
            )

    # --- calls to a role number -----------------------------------------------------------

    def voice(self, request: Request) -> str:
        to, caller = request["To"], request["From"]
        hooks = self.cfg.webhooks
        if hooks.access_number is not None and to == hooks.access_number:
            with self.sessions() as session:
                until = lockout.locked_until(session, caller, utcnow())
            if until is not None:
                log.warning(
                    "access number: call from a locked-out number rejected",
                    caller=caller,
                    until=until.isoformat(),
                )
                return twiml.reject()
            return self._ask_pin("Please enter your PIN, then press the pound key.")
        with self.sessions() as session:
            route = routing.role_route(session, number=to)
        if route is None:
            return self._say("This number is not in service.")
        target = route.holder_phone or self.cfg.team_line
        if target is None:
            return self._voicemail(route)
        screen = hooks.screen and route.holder_phone is not None
        return twiml.ring_holder(
            holder_phone=target,
            role_number=route.number,
            ring_seconds=hooks.ring_seconds,
            dialed_url=self.url("/voice/dialed", role=route.key),
            screen_url=self.url("/voice/screen", role=route.key, caller=caller) if screen else None,
            also=route.coholder_phones if route.holder_phone else (),
        )

    def screen(self, request: Request) -> str:
        number = request.query.get("caller", "")
        with self.sessions() as session:
            route = routing.role_route(session, key=request.query.get("role", ""))
            who = routing.caller(session, number) if number else None
        role_name = route.name if route else "your role"
        if who is not None:
            from_text = f"{who.contact_name}, {who.client_name}"
        else:
            from_text = " ".join(number.lstrip("+")) or "an unknown number"
        return twiml.whisper(
            text=f"Call for {role_name} from {from_text}. Press 1 to take the call.",
            accept_url=self.url("/voice/screened", role=request.query.get("role", "")),
            language=self.cfg.webhooks.language,
        )

    def screened(self, request: Request) -> str:
        return twiml.screened(request["Digits"] == "1")

    def dialed(self, request: Request) -> str:
        # The leg of a holder who answers but lets the whisper hang up (no 1) was answered,
        # so its DialCallStatus can be "completed" although nobody talked to the caller;
        # Twilio's <Dial> action request also carries DialBridged, "whether or not the
        # dialing call has been connected to the dialed destination"
        # (https://www.twilio.com/docs/voice/twiml/dial#action), which tells the two apart.
        taken = request["DialCallStatus"] == "completed" and request["DialBridged"] != "false"
        route = self._route(request)
        if taken or route is None:
            return twiml.goodbye("", self.cfg.webhooks.language)
        return self._voicemail(route)

    def recorded(self, request: Request) -> str:
        return self._say("Thank you. Goodbye.")

    def recording(self, request: Request) -> str:
        if request["RecordingStatus"] == "completed" and not self.cfg.webhooks.transcribe:
            self._mail_voicemail(request, transcript=None)
        return twiml.screened(True)

    def transcription(self, request: Request) -> str:
        text = request["TranscriptionText"]
        if request["TranscriptionStatus"] != "completed":
            text = "(Twilio could not transcribe this message.)"
        self._mail_voicemail(request, transcript=text)
        return twiml.screened(True)

    def _mail_voicemail(self, request: Request, transcript: str | None) -> None:
        route = self._route(request)
        if route is None:
            return
        caller = request["From"] or request["Caller"]
        with self.sessions() as session:
            who = routing.caller(session, caller) if caller else None
        from_text = f"{who.contact_name} ({who.client_name}), {caller}" if who else caller
        lines = [
            f"Voicemail for {route.name} ({route.number}) from {from_text or 'unknown'}.",
            f"Recording: {request['RecordingUrl']}",
        ]
        if request["RecordingDuration"]:
            lines.append(f"Length: {request['RecordingDuration']} s")
        if transcript is not None:
            lines += ["", transcript]
        self._queue_mail(
            route.key,
            f"voicemail:{request['RecordingSid'] or request['CallSid']}",
            f"Voicemail for {route.key} from {who.client_name if who else caller}",
            "\n".join(lines) + "\n",
        )

    # --- the access number -----------------------------------------------------------------

    def _ask_pin(self, prompt: str) -> str:
        return twiml.ask_digits(
            prompt=prompt,
            language=self.cfg.webhooks.language,
            action=self.url("/voice/access/pin"),
            num_digits=None,
        )

    def access_pin(self, request: Request) -> str:
        """The PIN, from a caller whose work phone holds a role. A refusal is counted in the
        store (rolekeeper.telephony.lockout): a few per call, then the call is hung up; a
        few from one number within the window, then that number is locked out. The PIN
        entered is never logged."""
        hooks = self.cfg.webhooks
        pin = hooks.pin.get_secret_value() if hooks.pin else None
        entered = request["Digits"]
        caller, call_sid, now = request["From"], request["CallSid"], utcnow()
        with self.sessions() as session:
            if lockout.locked_until(session, caller, now) is not None:
                # Locked out by another instance while this call was being answered.
                return self._say("Sorry, access denied.")
            held = routing.roles_held_by_phone(session, caller)
            refused_before = lockout.has_refusals(session, caller)
        if pin is None or not hmac.compare_digest(entered.encode(), pin.encode()) or not held:
            refusal = lockout.refuse(self.sessions, hooks, caller, call_sid, now)
            if refusal.locked_until is not None:
                log.warning(
                    "access number: caller locked out after wrong PINs",
                    caller=caller,
                    refusals=refusal.recent,
                    until=refusal.locked_until.isoformat(),
                )
                return self._say("Sorry, access denied.")
            log.warning(
                "access number refused",
                caller_known=bool(held),
                in_call=refusal.in_call,
                recent=refusal.recent,
            )
            if refusal.in_call >= hooks.pin_attempts_per_call:
                return self._say("Sorry, access denied.")
            return self._ask_pin("That was not accepted. Please enter your PIN, then press pound.")
        if refused_before:
            lockout.forget(self.sessions, caller, now)
        return twiml.ask_digits(
            prompt="Enter the client's number, then press the pound key.",
            language=hooks.language,
            action=self.url("/voice/access/dial", ok=self._access_token(request["CallSid"])),
            num_digits=None,
        )

    def access_dial(self, request: Request) -> str:
        token = self._access_token(request["CallSid"])
        if not hmac.compare_digest(request.query.get("ok", ""), token):
            return self._say("Sorry, access denied.")
        with self.sessions() as session:
            held = {r.role_id: r for r in routing.roles_held_by_phone(session, request["From"])}
            for number in self._candidates(request["Digits"]):
                who = routing.caller(session, number)
                if who is not None and who.role_id in held:
                    return twiml.dial_out(
                        number=number,
                        caller_id=held[who.role_id].number,
                        ring_seconds=max(self.cfg.webhooks.ring_seconds, 30),
                    )
        log.warning("access number: not a client of the caller's roles")
        return self._say("Sorry, that number is not one of your clients.")

    def _candidates(self, digits: str) -> list[str]:
        digits = "".join(c for c in digits if c.isdigit())
        found: list[str] = []
        for text in (digits, f"+{digits}", f"+{digits.removeprefix('00')}"):
            try:
                number = normalise_phone(text, self.settings.organisation.default_region)
            except InvalidValue:
                continue
            if number not in found:
                found.append(number)
        return found

    # --- SMS -------------------------------------------------------------------------------

    def sms(self, request: Request) -> str:
        sender = request["From"]
        with self.sessions() as session:
            route = routing.role_route(session, number=request["To"])
            who = routing.caller(session, sender) if route else None
        if route is None:
            return twiml.forward_sms(to=None, from_="", text="")
        media = [request[f"MediaUrl{i}"] for i in range(int(request["NumMedia"] or 0))]
        name = f"{who.contact_name} ({who.client_name})" if who else sender
        text = "\n".join([request["Body"], *media])
        self._queue_mail(
            route.key,
            f"sms:{request['MessageSid']}",
            f"SMS to {route.key} from {who.client_name if who else sender}",
            f"SMS to {route.name} ({route.number}) from {name}, {sender}:\n\n{text}\n",
        )
        return twiml.forward_sms(
            to=route.holder_phone, from_=route.number, text=f"{name}: {text}"[:1600]
        )


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
