"""permessage-deflate (RFC 7692) on the native server's WebSockets, compressed once.

Theory of operation. A client that offers the extension (every browser does) gets an answer
with ``server_no_context_takeover`` and ``client_no_context_takeover``, which RFC 7692 lets a
server give whatever the offer said (sections 7.1.1.1 and 7.1.1.2), and with the client's own
``server_max_window_bits`` when it asked for one (7.1.2.1). Neither side then carries a
compression context from one message to the next: each message is compressed on its own.

So a message needs no connection to be compressed, only the parameters: a
:class:`DeflateForm` is the wire form (:mod:`relaycore._forms`) of the members that
negotiated one parameter set, a singleton per set (:func:`deflate_form`). A delivery renders
its payload once per form present in a channel, as for every form: a payload of
``threshold_bytes`` or more is compressed ONCE and the same frame bytes go to every member of
that set; a smaller one, or one that does not shrink, goes as the plain frame (RFC 7692
leaves each message's compression to the sender). Members without the extension get the
plain frame, as before. No connection keeps a compressor.

Inbound, an :class:`Inflater` (a wsproto extension) inflates each compressed message with a
decompressor of its own, dropped when the message ends: between messages a connection keeps
none. The output is bounded as it is made: a message may inflate to ``message_limit`` bytes
(the session's, ``max_message_bytes``) and zlib is never asked for more than one byte past
what is left, so a small frame that would inflate to gigabytes (a deflate bomb) costs at most
the limit before the session closes the client with 1009, as for any message too big.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NamedTuple, Protocol

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from ._forms import WEBSOCKET, WireForm
from ._wire import text_frame

if TYPE_CHECKING:
    from ._config import CompressionConfig
    from ._hub import Hub
    from ._outbox import Outbox
    from ._session_seams import Headers

__all__ = ["Accepted", "DeflateForm", "Inflater", "deflate", "deflate_form", "inflating", "negotiate"]

EXTENSION = b"permessage-deflate"
#: What a sync flush ends with, left off every compressed message (RFC 7692, 7.2.1) and put
#: back before inflating one (7.2.2).
TAIL = b"\x00\x00\xff\xff"


def _compressed_bound(limit: int) -> int:
    """The most compressed bytes a message that inflates to ``limit`` bytes may take.

    DEFLATE adds a few bytes per block to data that does not compress (stored blocks), an
    encoder with fixed codes at most one bit in eight. A message longer than this is too big
    whatever it inflates to: otherwise empty blocks could go on for ever, inflating to nothing.
    """
    return limit + limit // 8 + 1024


class DeflateForm(WireForm):
    """WebSocket frames, compressed (RSV1 set) at ``threshold`` bytes and over: the form of
    the members that negotiated permessage-deflate with a window of ``bits``."""

    __slots__ = ("_batch", "_joined", "bits", "level", "threshold")

    def __init__(self, bits: int, level: int, threshold: int) -> None:
        #: The compressor's window (base-2 logarithm): the client's server_max_window_bits.
        self.bits = bits
        #: The zlib compression level (1 fastest ... 9 smallest).
        self.level = level
        #: The smallest payload compressed, in bytes.
        self.threshold = threshold
        self._batch: list[bytes] = []
        self._joined = b""
        super().__init__(f"websocket-deflate-{bits}")

    def squeeze(self, payload: bytes) -> bytes | None:
        """``payload`` compressed as one message, or None when it is under the threshold or
        does not come out smaller."""
        if len(payload) < self.threshold:
            return None
        data = deflate(payload, self.level, self.bits)
        return data if len(data) < len(payload) else None

    def render(self, payload: bytes) -> bytes:
        data = self.squeeze(payload)
        if data is None:
            return text_frame(payload)
        return b"\xc1" + text_frame(data)[1:]  # the same header, with RSV1 ("compressed") set

    def batch(self, payloads: list[bytes]) -> bytes:
        # Several payloads go to every member in one list (a departure's leaves): render the
        # list once too, not once per member past the first of its payloads.
        last = self._batch
        if len(payloads) != len(last) or any(a is not b for a, b in zip(payloads, last, strict=True)):
            self._joined = super().batch(payloads)
            self._batch = list(payloads)
        return self._joined

    def close(self, code: int, reason: str) -> bytes:
        return WEBSOCKET.close(code, reason)

    def keepalive(self) -> bytes:
        return WEBSOCKET.keepalive()


def deflate(payload: bytes, level: int = 6, bits: int = 15) -> bytes:
    """``payload`` compressed on its own, as RFC 7692 carries it: raw DEFLATE ended by a sync
    flush, without the flush's last four bytes (7.2.1).

    >>> import zlib
    >>> data = deflate(b'{"a":"' + b"x" * 100 + b'"}')
    >>> zlib.decompressobj(-15).decompress(data + TAIL)[:8]
    b'{"a":"xx'
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


_FORMS: dict[tuple[int, int, int], DeflateForm] = {}


def deflate_form(bits: int, level: int, threshold: int) -> DeflateForm:
    """The one form of a parameter set (its memo is worth something only when shared)."""
    key = (bits, level, threshold)
    form = _FORMS.get(key)
    if form is None:
        form = _FORMS[key] = DeflateForm(bits, level, threshold)
    return form


class Accepted(NamedTuple):
    """An offer the relay accepts: the members' form and the ``Sec-WebSocket-Extensions`` answer."""

    form: DeflateForm
    answer: bytes

    def outbox(self, hub: Hub, old: Outbox) -> Outbox:
        """An empty outbox of this form in the place of ``old``: the same bound, door and peer."""
        outbox = hub.new_outbox(self.form, old.door)
        outbox.limit, outbox.peer = old.limit, old.peer
        return outbox


def negotiate(headers: Headers, config: CompressionConfig) -> Accepted | None:
    """The first permessage-deflate offer in ``headers`` the relay accepts (RFC 7692, 7.1),
    or None: compression off, nothing offered, or no offer it can accept.

    >>> from relaycore import Config
    >>> offer = [(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")]
    >>> negotiate(offer, Config().compression).answer
    b'permessage-deflate; server_no_context_takeover; client_no_context_takeover'
    """
    if not config.enabled:
        return None
    for name, value in headers:
        if bytes(name).lower() != b"sec-websocket-extensions":
            continue
        for offer in bytes(value).split(b","):
            extension, *params = offer.split(b";")
            if extension.strip().lower() != EXTENSION:
                continue
            window = _window_asked(params)
            if window is None:
                continue  # declined: the next offer may do
            bits, asked = window
            answer = EXTENSION + b"; server_no_context_takeover; client_no_context_takeover"
            if asked:
                answer += b"; server_max_window_bits=%d" % bits
            return Accepted(deflate_form(bits, config.level, config.threshold_bytes), answer)
    return None


def _window_asked(params: list[bytes]) -> tuple[int, bool] | None:
    """The window an offer's parameters leave the relay, and whether the client set it; None
    when the offer must be declined (7.1): a parameter not defined for an offer, one with an
    invalid value, one named twice, or a window of 8 (zlib compresses with 9 at least)."""
    seen: set[bytes] = set()
    bits, asked = 15, False
    for param in params:
        key, equals, value = param.partition(b"=")
        key = key.strip().lower()
        value = value.strip()
        if len(value) > 1 and value[:1] == value[-1:] == b'"':
            value = value[1:-1]  # a quoted-string value (7.1)
        if key in seen:
            return None
        seen.add(key)
        if key in (b"server_no_context_takeover", b"client_no_context_takeover"):
            if equals:
                return None
        elif key == b"server_max_window_bits":
            window = _window(value)
            if window is None or window < 9:
                return None
            bits, asked = window, True
        elif key == b"client_max_window_bits":
            if equals and _window(value) is None:
                return None
        else:
            return None
    return bits, asked


def _window(value: bytes) -> int | None:
    """A window size as RFC 7692 writes it: a decimal from 8 to 15 without leading zeros."""
    if value.isdigit() and not value.startswith(b"0") and 8 <= int(value) <= 15:
        return int(value)
    return None


class Inflating(Protocol):
    """What an :class:`Inflater` needs of its session: the limit, and the 1009."""

    message_limit: int

    def too_big(self) -> None:
        """The client's message is over ``message_limit``: close 1009."""


class Inflater(Extension):
    """A wsproto extension: inflates the client's compressed messages one at a time, bounded
    by the session's ``message_limit`` (see the module docstring); compresses the messages
    the connection itself sends through wsproto (the ``/echo`` endpoint's), every one."""

    name = EXTENSION.decode()

    __slots__ = ("_form", "_frame", "_inflate", "_left", "_over", "_room", "_session")

    def __init__(self, form: DeflateForm, session: Inflating) -> None:
        self._form = form
        self._session = session
        #: The decompressor of the compressed message being read (None between messages).
        self._inflate: zlib._Decompress | None = None
        self._frame = False  # the frame being read is (part of) a compressed message
        self._over = False  # that message went over the limit: the rest of it is dropped
        self._room = 0  # bytes the message may still inflate to
        self._left = 0  # compressed bytes the message may still take

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False  # the server answers offers; it makes none

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol() or opcode is Opcode.CONTINUATION:
            if rsv.rsv1:  # only a message's first frame says it is compressed (RFC 7692, 6)
                return CloseReason.PROTOCOL_ERROR
            self._frame = not opcode.iscontrol() and (self._inflate is not None or self._over)
        else:  # a new message
            self._over = False
            self._frame = rsv.rsv1
            if rsv.rsv1:
                limit = self._session.message_limit
                self._inflate = zlib.decompressobj(-15)  # any window the client used, up to 15
                self._room, self._left = limit, _compressed_bound(limit)
            else:
                self._inflate = None
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        if not self._frame:
            return data
        return self._take(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        if not self._frame or not fin:
            return None
        self._frame = False
        out = self._take(TAIL)  # the end of the message: what the sender left off
        self._inflate = None
        self._over = False
        return out

    def _take(self, data: bytes) -> bytes | CloseReason:
        inflate = self._inflate
        if inflate is None:
            return b""  # the rest of a message that went over the limit
        self._left -= len(data)
        try:
            out = inflate.decompress(data, self._room + 1)  # never more than one byte too many
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._room -= len(out)
        if self._room < 0 or self._left < 0:
            self._inflate = None
            self._over = True
            self._session.too_big()
            return b""
        return out

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        # Only the /echo endpoint sends messages through wsproto (a member's frames come from
        # its outbox): it compresses every one, whatever its size, so that a conformance suite
        # checks the compressor on all of them.
        if fin and (opcode is Opcode.TEXT or opcode is Opcode.BINARY):
            return RsvBits(True, rsv.rsv2, rsv.rsv3), deflate(data, self._form.level, self._form.bits)
        return rsv, data


def inflating(form: WireForm, session: Inflating) -> list[Extension] | None:
    """The wsproto extensions of a WebSocket whose outbox carries ``form``: an
    :class:`Inflater` when that is a :class:`DeflateForm`, else none."""
    return [Inflater(form, session)] if isinstance(form, DeflateForm) else None
