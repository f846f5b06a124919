"""The bounded output tail: what a run record keeps of a stream, whatever the stream's size."""

from __future__ import annotations

from workspace_adapter.base.tails import TAIL_BYTES, OutputTail


def test_a_short_stream_is_kept_whole() -> None:
    tail = OutputTail()
    tail.add(b"hello\n")
    tail.add("wörld\n".encode())
    assert tail.text() == "hello\nwörld\n"


def test_a_long_stream_keeps_its_last_bytes_and_stays_bounded() -> None:
    tail = OutputTail(limit=100)
    for n in range(1000):
        tail.add(f"{n:04d}\n".encode())
        assert len(tail._data) <= 2 * 100
    assert tail.data() == b"".join(f"{n:04d}\n".encode() for n in range(980, 1000))
    assert len(OutputTail().data()) == 0 and OutputTail().limit == TAIL_BYTES


def test_a_character_cut_at_the_start_is_left_out() -> None:
    tail = OutputTail(limit=10)
    # 3-byte characters: the kept 10 bytes start one byte into a character.
    tail.add(("€" * 10).encode())
    assert tail.text() == "€" * 3
    tail.add(b"x" * 25)
    assert tail.text() == "x" * 10


def test_one_huge_chunk_is_cut_to_the_limit() -> None:
    tail = OutputTail(limit=16)
    tail.add(b"a" * 1000 + b"the end")
    assert tail.data() == b"aaaaaaaaathe end"
