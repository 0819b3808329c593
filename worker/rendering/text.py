"""Plain text from templates: the text part derived from an email's HTML, and SMS part counts."""

from __future__ import annotations

import html2text

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")


def html_to_text(html: str) -> str:
    """A plain-text part derived from HTML: unwrapped lines, no images, layout tables flattened."""
    converter = html2text.HTML2Text()
    # Wrapping would break long tracking links; mail clients wrap plain text themselves.
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    return str(converter.handle(html)).strip()


def sms_segments(body: str) -> int:
    """How many SMS parts `body` takes: GSM-7 160/153 septets, else UCS-2 70/67 code units."""
    if not body:
        return 0
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in body):
        return _parts([2 if char in _GSM_EXTENDED else 1 for char in body], 160, 153)
    return _parts([len(char.encode("utf-16-le")) // 2 for char in body], 70, 67)


def _parts(sizes: list[int], single: int, part: int) -> int:
    """Count message parts, never splitting an escape pair or a surrogate pair across two."""
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count
