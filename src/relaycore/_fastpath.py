"""A fast path for the common client frame: one small, whole, masked text frame.

Theory of operation. Nearly all client traffic is short text messages sent as single
frames. wsproto parses each one in pure Python at several microseconds a frame, more than
the rest of the relay spends on the message. So a connection first peels such frames off
the front of what it reads (:func:`take_text_frames`), and hands wsproto only what
follows the first frame that is anything else: a control frame, a fragment, a reserved
bit, an unmasked frame, a non-minimal or 64-bit length, invalid UTF-8, a payload over the
size limit, or a frame that has not fully arrived. Every error and every close is still
wsproto's, exactly as without the fast path.

The fast path may only run while wsproto holds nothing: no partial frame in its buffer and
no fragmented message in progress. :class:`FrameScanner` follows the bytes handed to
wsproto, reading frame headers only, to know when that is so again.
"""

from __future__ import annotations

__all__ = ["FrameScanner", "take_text_frames"]

_TEXT_FIN = 0x81  # FIN, no reserved bits, opcode 1 (text)
_MASKED = 0x80


def take_text_frames(data: bytes, limit: int) -> tuple[list[str], int]:
    """Decode the simple text frames at the start of ``data``.

    Returns the messages and how many bytes of ``data`` they took. A frame qualifies when
    it is final, text, without reserved bits, masked, whole, at most ``limit`` bytes and at
    most 65,535 bytes long (minimally encoded), and valid UTF-8.

    >>> take_text_frames(b"\\x81\\x82\\x00\\x00\\x00\\x00hi\\x89\\x80", 100)
    (['hi'], 8)
    """
    messages: list[str] = []
    pos = 0
    end = len(data)
    while end - pos >= 6:
        if data[pos] != _TEXT_FIN:
            break
        length = data[pos + 1] - _MASKED
        if length < 0:
            break  # unmasked: a protocol error, which wsproto reports
        if length < 126:
            key = pos + 2
        elif length == 126 and end - pos >= 8:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                break  # not minimally encoded: wsproto rejects it
            key = pos + 4
        else:
            break
        start = key + 4
        stop = start + length
        if stop > end or length > limit:
            break
        if length:
            mask = data[key:start] * ((length >> 2) + 1)
            raw = int.from_bytes(data[start:stop], "little") ^ int.from_bytes(mask[:length], "little")
            try:
                text = raw.to_bytes(length, "little").decode()
            except UnicodeDecodeError:
                break
        else:
            text = ""
        messages.append(text)
        pos = stop
    return messages, pos


class FrameScanner:
    """Follows frame boundaries in a client byte stream by reading frame headers only.

    >>> scanner = FrameScanner()
    >>> scanner.feed(b"\\x01\\x81\\x00\\x00\\x00\\x00a")  # a first fragment, not final
    >>> scanner.at_rest
    False
    >>> scanner.feed(b"\\x80\\x81\\x00\\x00")  # the final fragment, partly arrived
    >>> scanner.at_rest
    False
    >>> scanner.feed(b"\\x00\\x00b")
    >>> scanner.at_rest
    True
    """

    __slots__ = ("_fragmented", "_head", "_need")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current frame still to come
        self._head = b""  # the start of a frame header that has not fully arrived
        self._fragmented = False  # inside a data message sent in several frames

    @property
    def at_rest(self) -> bool:
        """True when the bytes so far end on a frame boundary outside any fragmented message."""
        return not self._need and not self._head and not self._fragmented

    def feed(self, data: bytes) -> None:
        """Follow ``data``, the next bytes of the stream."""
        need = self._need
        if need >= len(data):
            self._need = need - len(data)
            return
        if self._head:
            data = self._head + data
            self._head = b""
        pos = need
        end = len(data)
        while pos < end:
            if end - pos < 2:
                break
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            size = 6 if second & _MASKED else 2
            if length == 126:
                size += 2
                if end - pos < size:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                size += 8
                if end - pos < size:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            elif end - pos < size:
                break
            if first & 0x0F < 8:  # a data frame or continuation; control frames may interleave
                self._fragmented = not first & 0x80
            pos += size + length
        if pos > end:
            self._need = pos - end
        else:
            self._need = 0
            if pos < end:
                self._head = data[pos:]
