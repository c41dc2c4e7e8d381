"""Adapters to mail servers, Exchange and Twilio. Only service.py and tests choose one."""
