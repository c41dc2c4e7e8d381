"""Public free-mail domains: an address there is personal unless the directory lists it as a
client's contact. Extend with `detect.freemail_domains` in the config."""

from __future__ import annotations

BUILTIN_FREEMAIL = frozenset(
    {
        # International
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
        "yahoo.com", "ymail.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr", "icloud.com",
        "me.com", "mac.com", "aol.com", "mail.com", "gmx.com", "gmx.net", "gmx.de", "web.de",
        "t-online.de", "protonmail.com", "proton.me", "pm.me", "tutanota.com", "tuta.io",
        "zoho.com", "fastmail.com", "hey.com", "orange.fr", "free.fr", "laposte.net",
        "libero.it", "seznam.cz", "wp.pl", "o2.pl", "interia.pl",
        # Russia and neighbours
        "mail.ru", "bk.ru", "list.ru", "inbox.ru", "internet.ru", "yandex.ru", "yandex.com",
        "ya.ru", "yandex.by", "yandex.kz", "yandex.ua", "narod.ru", "rambler.ru", "lenta.ru",
        "ro.ru", "autorambler.ru", "myrambler.ru", "qip.ru", "ukr.net", "i.ua", "meta.ua",
        "tut.by",
        # Asia
        "qq.com", "163.com", "126.com", "sina.com", "naver.com", "hanmail.net",
    }
)  # fmt: skip
