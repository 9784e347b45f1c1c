"""RFC 6587 framing of the syslog listener's TCP streams, without sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.syslog import BadFrame, FrameDecoder

M1 = b"<34>1 2024-05-01T12:00:00Z sw1 sshd 42 ID47 - login failed"
M2 = b"<13>May  1 12:00:01 sw2 kernel: link down"


def frames(*chunks: bytes, max_bytes: int = 1024, finish: bool = True) -> list[bytes | BadFrame]:
    decoder = FrameDecoder(max_bytes)
    out: list[bytes | BadFrame] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    if finish:
        out.extend(decoder.finish())
    return out


def octet(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


def test_octet_counted_frames_may_hold_newlines() -> None:
    multi = b"<13>May  1 12:00:01 sw2 app: line one\nline two"
    assert frames(octet(M1) + octet(multi)) == [M1, multi]


def test_non_transparent_frames_end_at_lf_and_drop_cr_and_nul() -> None:
    assert frames(M1 + b"\r\n" + M2 + b"\n\0") == [M1, M2]


def test_mixed_framing_on_one_stream() -> None:
    assert frames(octet(M1) + M2 + b"\n" + octet(M1)) == [M1, M2, M1]


def test_frames_split_across_reads_at_every_byte() -> None:
    stream = octet(M1) + M2 + b"\n" + octet(M2)
    for cut in range(1, len(stream)):
        assert frames(stream[:cut], stream[cut:]) == [M1, M2, M2], cut


def test_last_line_without_newline_still_counts_at_end_of_stream() -> None:
    assert frames(M2, finish=False) == []
    assert frames(M2) == [M2]


def test_oversize_octet_count_is_skipped_up_to_the_next_newline() -> None:
    got = frames(b"99999 " + b"x" * 50 + b"\n" + M2 + b"\n", max_bytes=100)
    assert got == [BadFrame("oversize"), M2]


def test_oversize_line_is_skipped_even_before_its_newline_arrives() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(b"<13>" + b"y" * 200) == [BadFrame("oversize")]
    assert decoder.feed(b"more of the same line\n" + M2 + b"\n") == [M2]


def test_too_many_digits_or_a_leading_zero_is_no_octet_count() -> None:
    # MSG-LEN is NONZERO-DIGIT *DIGIT: these are plain lines (the worker judges them).
    assert frames(b"12345678901234 abc\n" + M2 + b"\n") == [b"12345678901234 abc", M2]
    assert frames(b"0 " + M2 + b"\n") == [b"0 " + M2]


def test_a_digit_run_is_framed_the_same_however_it_is_read() -> None:
    assert frames(b"1" * 20, b"\n" + M2 + b"\n") == [b"1" * 20, M2]
    assert frames(b"1234567890", b" x\n") == frames(b"1234567890 x\n") == [b"1234567890 x"]


def test_crlf_split_at_the_size_limit_and_blank_tails() -> None:
    assert frames(b"<13><13>\r", b"\n", max_bytes=8) == [b"<13><13>"]
    assert frames(b"\t") == frames(b"\t\n") == [BadFrame("empty")]


def test_line_starting_with_a_digit_but_no_length() -> None:
    assert frames(b"2024-05-01 sw1 disk full\n") == [b"2024-05-01 sw1 disk full"]


def test_empty_frames_and_truncated_stream() -> None:
    assert frames(b"3    \n" + M2 + b"\n") == [BadFrame("empty"), M2]
    assert frames(b"500 " + M1) == [BadFrame("bad_length")]


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_bytes_never_raise_and_respect_the_limit(chunks: list[bytes]) -> None:
    for frame in frames(*chunks, max_bytes=128):
        if isinstance(frame, bytes):
            assert 0 < len(frame) <= 128
            assert frame.strip()
