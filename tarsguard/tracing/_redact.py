"""Redaction of personal data and secrets from trace text: built-in patterns and user callables."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from .._exceptions import ConfigurationError

__all__ = ["BUILTIN_REDACTIONS", "RedactSpec", "Redactor", "make_redactor", "redact_builtin", "redact_each"]

Redactor = Callable[[str], str]
"""A function from text to the same text with sensitive parts replaced."""

RedactSpec = bool | Sequence[str | Redactor] | None
"""``True`` (or ``None``): the built-ins; ``False``: nothing; a sequence: built-in names and callables, in order."""

BUILTIN_REDACTIONS = ("api_key", "email", "card", "phone")
"""Names of the built-in redactions, in the order they are applied."""

_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
    re.ASCII,
)
_BEARER = re.compile(r"(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*", re.ASCII)
_SECRET_NAME = re.compile(
    r"(?<![A-Za-z0-9])(?i:(?:api|access|secret|private|client|auth|signing|encryption|master)[_-]?key"
    r"|(?:client[_-]?)?secret|(?:access|auth|refresh|api|session)?[_-]?token"
    r"|password|passwd|passphrase|pwd|pass)[\"']?\s*\Z",
    re.ASCII,
)
"""A name that holds a secret, alone or as the last part of a longer one (``DB_PASSWORD``, ``aws_secret_access_key``).
"""
_SECRET_VALUE = re.compile(r"(\s*)([\"']?)([^\s\"',;&)\]}>]+)", re.ASCII)
_PROSE_WORD = re.compile(r"[A-Za-z]{1,7}", re.ASCII)
"""After ``name:`` and a space, an unquoted short word of letters reads as prose ("password: reset it"), not a value."""
_NAME_WINDOW = 24
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")  # Unicode: josé@exämple.de
_CARD = re.compile(r"(?<![\w.+-])[0-9](?:[ -]?[0-9]){12,18}(?![\w]|[ .-][0-9])", re.ASCII)
_PHONE = re.compile(
    r"(?<![\w.+-])(?:\+[0-9]{7,15}"
    r"|(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?|[0-9]{1,4}[ .-])(?:[0-9]{2,4}[ .-]){0,3}[0-9]{3,4})"
    r"(?!\w|[ .-][0-9])",
    re.ASCII,
)
_DIGITS = b"0123456789"
_GITHUB_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
_SEVEN_DIGITS = re.compile(r"[0-9](?:[ ().-]{0,2}[0-9]){6}", re.ASCII)
"""Seven digits, at most two of `` ().-`` between each two: every card number and phone number holds such a run."""


def _may_hold_key(text: str) -> bool:
    """Whether ``text`` holds a literal that starts one of the API-key shapes.

    Each longer search sits behind a one-character one, which costs a twentieth as much on prose.
    """
    if "_" in text and (
        "hf_" in text or "github_pat_" in text or any(prefix in text for prefix in _GITHUB_TOKEN_PREFIXES)
    ):
        return True
    if "-" in text and ("sk-" in text or "xox" in text):
        return True
    if "A" in text and ("IA" in text or "AIza" in text):  # AKIA, ASIA
        return True
    return "J" in text and "eyJ" in text


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if i % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15:
        return False
    # Dots alone separate IP addresses and version numbers too: only the 3-group form (555.123.4567) is a phone.
    return not ({c for c in text if not c.isdigit()} == {"."} and text.count(".") != 2)


def _redact_secret_values(text: str) -> str:
    """Values after ``api_key=``, ``password:``, ``DB_PASSWORD=``, ``token =`` and the like."""
    separators = sorted(_find_all(text, ":") + _find_all(text, "="))
    pieces: list[str] = []
    copied = 0
    for at in separators:
        start = max(0, at - _NAME_WINDOW)
        if at < copied or not _names_a_secret(text[start:at].lower()) or not _SECRET_NAME.search(text, start, at):
            continue
        if text[at] == "=" and (text[at + 1 : at + 2] == "=" or text[at - 1 : at] in ("=", "!", "<", ">")):
            continue  # a comparison (token == None), not an assignment
        value = _SECRET_VALUE.match(text, at + 1)
        if value is None:
            continue
        space, quote, found = value.groups()
        if text[at] == ":" and space and not quote and _PROSE_WORD.fullmatch(found):
            continue
        pieces += (text[copied : value.start(3)], "[REDACTED:api_key]")
        copied = value.end(3)
    if not pieces:
        return text
    pieces.append(text[copied:])
    return "".join(pieces)


def _names_a_secret(lower: str) -> bool:
    """Whether lower-cased text holds "key", "secret", "token", "pass" or "pwd": every name ``_SECRET_NAME`` matches
    holds one of them, so this is a cheap pre-test for it."""
    return "key" in lower or "secret" in lower or "token" in lower or "pass" in lower or "pwd" in lower


def _find_all(text: str, char: str) -> list[int]:
    found = []
    at = text.find(char)
    while at != -1:
        found.append(at)
        at = text.find(char, at + 1)
    return found


def _card_sub(match: re.Match[str]) -> str:
    found = match.group()
    return "[REDACTED:card]" if _luhn(found.replace(" ", "").replace("-", "")) else found


def _phone_sub(match: re.Match[str]) -> str:
    found = match.group()
    return "[REDACTED:phone]" if _phone_ok(found) else found


class _Builtin:
    """The selected built-in redactions, each behind a cheap test so that plain prose costs little."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(name for name in BUILTIN_REDACTIONS if name in names)
        self._api_key, self._email, self._card, self._phone = (name in self.names for name in BUILTIN_REDACTIONS)

    def __call__(self, text: str) -> str:
        if len(text) < 6:  # shorter than the shortest email (a@b.cd), phone or key
            return text
        if self._api_key:
            if _may_hold_key(text):
                text = _API_KEY.sub("[REDACTED:api_key]", text)
            lower = text.lower()
            if "bearer" in lower:
                text = _BEARER.sub("[REDACTED:api_key]", text)
            if ("=" in text or ":" in text) and _names_a_secret(lower):
                text = _redact_secret_values(text)
        if self._email and "@" in text:
            text = _EMAIL.sub("[REDACTED:email]", text)
        if self._card or self._phone:
            raw = text.encode("utf-8", "surrogatepass")
            digits = len(raw) - len(raw.translate(None, _DIGITS))
            if digits >= 7 and _SEVEN_DIGITS.search(text):  # each pattern costs five times this search
                if self._card and digits >= 13:
                    text = _CARD.sub(_card_sub, text)
                if self._phone:
                    text = _PHONE.sub(_phone_sub, text)
        return text

    def __repr__(self) -> str:
        return f"builtin({', '.join(self.names)})"


redact_builtin: Redactor = _Builtin(BUILTIN_REDACTIONS)
"""All built-in redactions: API-key shapes, emails, card numbers (Luhn-checked) and phone numbers."""


def redact_each(texts: tuple[str, ...], redactor: Redactor) -> tuple[str, ...]:
    """Each of ``texts`` redacted.

    For the built-ins, one call on the texts joined by newlines settles the usual case of nothing to redact: a match
    inside one text still matches where that text sits in the joined text (to every pattern, a newline looks like a
    text's start or end), so when the joined text has nothing, no text has. A match across a newline (a bearer token
    or a secret value after a line break) only sends the texts down the slow path: when something is found, and for
    user callables, each text is redacted on its own.
    """
    if len(texts) > 1 and isinstance(redactor, _Builtin):
        joined = "\n".join(texts)
        if redactor(joined) == joined:
            return texts
    return tuple(redactor(text) for text in texts)


def make_redactor(spec: RedactSpec) -> Redactor | None:
    """One redactor from a spec: built-in names (kept in their own order) and callables (applied after them).

    Returns ``None`` when nothing is to be redacted.
    """
    if spec is None or spec is True:
        return redact_builtin
    if spec is False:
        return None
    if isinstance(spec, str) or not isinstance(spec, Iterable):
        raise ConfigurationError(f"redact must be True, False or a list of built-in names and callables; got {spec!r}")
    names: list[str] = []
    steps: list[Redactor] = []
    for item in spec:
        if isinstance(item, str):
            if item not in BUILTIN_REDACTIONS:
                raise ConfigurationError(
                    f"unknown redaction {item!r}; built-ins are {', '.join(BUILTIN_REDACTIONS)}, or pass a callable"
                )
            names.append(item)
        elif callable(item):
            steps.append(item)
        else:
            raise ConfigurationError(f"redact items must be built-in names or callables; got {item!r}")
    if names:
        steps.insert(0, _Builtin(names))
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    return _Chain(tuple(steps))


class _Chain:
    """Redactors applied one after another."""

    def __init__(self, steps: tuple[Redactor, ...]) -> None:
        self._steps = steps

    def __call__(self, text: str) -> str:
        for step in self._steps:
            text = step(text)
        return text
