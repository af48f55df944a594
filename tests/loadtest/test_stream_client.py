"""The SSE line splitter every load-test and benchmark client reads streams with."""

from __future__ import annotations

from loadtest.stream_client import split_sse


def test_sse_lines_split_only_at_line_feeds():
    """A token may carry U+2028 or U+0085 inside the JSON string: those must not end a line (httpx's iter_lines
    splits there, which cut a chunk in two in CI)."""
    payload = 'data: {"content":"a\u2028b\x85c"}\r\n\r\ndata: [DONE]\n\n'.encode()
    lines, rest = [], b""
    for i in range(0, len(payload), 3):  # arbitrary chunk boundaries, some inside multi-byte characters
        more, rest = split_sse(rest, payload[i : i + 3])
        lines += more
    assert lines == ['data: {"content":"a\u2028b\x85c"}', "", "data: [DONE]", ""] and rest == b""
