"""Telephony: role numbers on Twilio that always reach the role's current holder.

- `routing`: what the store says about a number (role, holder, client) — read live, per call;
- `twiml`: the TwiML documents answered to Twilio (pure functions);
- `webhooks`: the ASGI app of `rolekeeper webhooks` (signature check, dispatch);
- `numbers`: desired settings of each number, provisioning and the reconciler (`reroute`);
- `fallback`: static TwiML each number falls back to while rolekeeper is down;
- `sms`: SMS notices to clients (`send_notice_sms`);
- `mailcopy`: voicemail and SMS copies mailed to the role mailbox (due work).
"""
