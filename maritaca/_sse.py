"""A small, fast Server-Sent Events decoder working on raw bytes.

Why not httpx-sse: it decodes every line to ``str`` and builds an event object per
line group; on a 20,000-chunk stream that costs more than the JSON parsing itself
(see ``bench/bench_core_stream.py``). This decoder follows the SSE spec's line rules
(``\\n``, ``\\r\\n`` and ``\\r`` endings, ``:`` comments, ``data:`` with or without the
space, multi-line ``data``, a blank line ends an event) and yields only ``data``
payloads, which is all the chat completions stream uses.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Feed raw byte chunks in any split; get back each complete event's data.

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a": 1}\\n\\nda') + d.feed(b'ta: [DONE]\\n\\n')
    [b'{"a": 1}', b'[DONE]']
    """

    __slots__ = ("_tail", "_data")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # may be the first half of a \r\n split across reads
                buf, self._tail = buf[:-1], b"\r"
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                return self._lines(buf.split(b"\n"), keep_tail=False)
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        return self._lines(lines, keep_tail=True)

    def _lines(self, lines: list[bytes], *, keep_tail: bool) -> list[bytes]:
        if not keep_tail:  # the \r case: the last line piece is still incomplete
            partial = lines.pop()
            self._tail = partial + self._tail
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            # comments (":...") and the event/id/retry fields carry nothing we use
        return out

    def flush(self) -> list[bytes]:
        """At end of stream: the last event, if the server omitted its blank line."""
        out = self.feed(b"\n\n") if (self._tail or self._data) else []
        self._tail = b""
        return out
