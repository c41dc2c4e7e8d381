"""The TwiML documents rolekeeper answers, built with twilio-python's own builders.

Pure functions of their arguments: the webhooks decide, these only write the XML.
"""

from __future__ import annotations

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse


def ring_holder(
    *,
    holder_phone: str,
    role_number: str,
    ring_seconds: int,
    dialed_url: str,
    screen_url: str | None,
    also: tuple[str, ...] = (),
) -> str:
    """Ring the holder's work phone showing the role number; `dialed_url` decides what
    follows (voicemail unless the holder took the call). With `screen_url` the holder hears
    a whisper first and must press 1, so the holder's own voicemail never takes the call."""
    response = VoiceResponse()
    dial = response.dial(
        action=dialed_url, method="POST", timeout=ring_seconds, caller_id=role_number
    )
    # Several <Number>s ring at once (a co-holder beside the holder); the first to take the
    # call gets it.
    for phone in (holder_phone, *also):
        if screen_url is not None:
            dial.number(phone, url=screen_url, method="POST")
        else:
            dial.number(phone)
    return str(response)


def whisper(*, text: str, accept_url: str, language: str) -> str:
    """Played to the holder only: who calls, press 1. No key pressed: the leg hangs up."""
    response = VoiceResponse()
    gather = response.gather(
        input="dtmf", num_digits=1, action=accept_url, method="POST", timeout=8
    )
    gather.say(text, language=language)
    response.hangup()
    return str(response)


def screened(accepted: bool) -> str:
    """The holder's answer to the whisper: an empty document connects the call."""
    response = VoiceResponse()
    if not accepted:
        response.hangup()
    return str(response)


def voicemail(
    *,
    greeting: str,
    language: str,
    recorded_url: str,
    recording_url: str,
    transcription_url: str | None,
    max_seconds: int,
) -> str:
    response = VoiceResponse()
    response.say(greeting, language=language)
    options: dict[str, object] = {
        "action": recorded_url,
        "method": "POST",
        "max_length": max_seconds,
        "play_beep": True,
        "finish_on_key": "#",
        "recording_status_callback": recording_url,
        "recording_status_callback_method": "POST",
    }
    if transcription_url is not None:
        options |= {"transcribe": True, "transcribe_callback": transcription_url}
    response.record(**options)
    return str(response)


def goodbye(text: str, language: str) -> str:
    response = VoiceResponse()
    if text:
        response.say(text, language=language)
    response.hangup()
    return str(response)


def reject() -> str:
    """Refuse a call unanswered. "If the first verb in a TwiML document is <Reject>, Twilio
    will not pick up the call" and does not bill it
    (https://www.twilio.com/docs/voice/twiml/reject): so only for a call's first request."""
    response = VoiceResponse()
    response.reject(reason="rejected")
    return str(response)


def ask_digits(*, prompt: str, language: str, action: str, num_digits: int | None) -> str:
    """Ask for digits (a PIN, a number ending with #); no answer ends the call."""
    response = VoiceResponse()
    options: dict[str, object] = {"input": "dtmf", "action": action, "method": "POST"}
    options |= {"timeout": 10, "finish_on_key": "#"}
    if num_digits is not None:
        options["num_digits"] = num_digits
    gather = response.gather(**options)
    gather.say(prompt, language=language)
    response.hangup()
    return str(response)


def dial_out(*, number: str, caller_id: str, ring_seconds: int) -> str:
    """Connect the holder to a client, showing only the role number."""
    response = VoiceResponse()
    dial = response.dial(caller_id=caller_id, timeout=ring_seconds)
    dial.number(number)
    return str(response)


def forward_sms(*, to: str | None, from_: str, text: str) -> str:
    """Forward an SMS to the holder from the role number; nothing to forward to: no reply."""
    response = MessagingResponse()
    if to is not None:
        response.message(text, to=to, from_=from_)
    return str(response)


def fallback_voice(
    *, holder_phone: str | None, team_line: str | None, role_number: str, ring_seconds: int
) -> str:
    """Static TwiML for a number's fallback URL: ring the holder, then the team line."""
    response = VoiceResponse()
    for target in (holder_phone, team_line):
        if target is not None:
            dial = response.dial(caller_id=role_number, timeout=ring_seconds)
            dial.number(target)
    if holder_phone is None and team_line is None:
        response.say("Sorry, nobody can take your call now. Please try again later.")
    response.hangup()
    return str(response)


def fallback_sms(*, holder_phone: str | None, role_number: str, role_name: str) -> str:
    """Static messaging TwiML: the text itself cannot be forwarded by a static file, so the
    holder is told to look in the Twilio console."""
    response = MessagingResponse()
    if holder_phone is not None:
        response.message(
            f"An SMS to {role_name} ({role_number}) arrived while rolekeeper was down; "
            "see the Twilio console's message log.",
            to=holder_phone,
            from_=role_number,
        )
    return str(response)
