"""state.read_fd / read_bytes read in 64 KiB pieces: one read of the whole limit
allocated a buffer that large, and with transparent huge pages the first byte
in it cost 2 MiB of RSS (the user unit's peak RSS jumped by 2 and 4 MiB)."""

import os

import pytest

from azure_firstboot import state


def test_reads_are_at_most_64_kib_and_the_content_is_whole(tmp_path, monkeypatch):
    data = os.urandom(300000)
    path = tmp_path / "f"
    path.write_bytes(data)
    asked = []
    real_read = os.read

    def spy(fd, n):
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(state.os, "read", spy)
    assert state.read_bytes(str(path), 16 * 1024 * 1024) == data
    assert asked and max(asked) <= state.READ_CHUNK
    asked.clear()
    fd = os.open(str(path), os.O_RDONLY)
    try:
        got = state.read_fd(fd, 100000)  # over the limit: limit + 1 bytes, no more
    finally:
        os.close(fd)
    assert got == data[:100001] and max(asked) <= state.READ_CHUNK


def test_over_the_limit_is_an_error_that_names_the_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 70000)
    with pytest.raises(OSError, match="larger than 64 KiB"):
        state.read_bytes(str(path), 65536)
    assert state.read_bytes(str(path), 70000) == b"x" * 70000
