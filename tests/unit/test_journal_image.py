from __future__ import annotations

import os
import stat
from pathlib import Path

import dill
import pytest

from backend.image import MAGIC, ImageStore
from backend.journal import Journal
from shared_api.errors import ImageTamperedError

KEY = b"j" * 32


def journal(tmp_path: Path) -> Journal:
    d = tmp_path / "journal"
    d.mkdir(exist_ok=True)
    return Journal(d, KEY)


def test_append_and_replay(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    for i in range(5):
        assert j.append({"op": "set_state", "i": i}) == i + 1
    j.close()
    report = journal(tmp_path).replay(2)
    assert [seq for seq, _ in report.records] == [3, 4, 5]
    assert report.records[0][1] == {"op": "set_state", "i": 2}
    assert report.last_seq == 5 and not report.warnings


def test_segments_rotate_and_prune(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    j.append({"op": "a"})
    j.append({"op": "b"})
    assert j.rotate() == 2
    j.append({"op": "c"})
    assert len(list((tmp_path / "journal").glob("*.log"))) == 2
    j.prune(keep_after=2)
    assert len(list((tmp_path / "journal").glob("*.log"))) == 1
    assert [seq for seq, _ in journal(tmp_path).replay(2).records] == [3]
    j.prune(keep_after=1)  # nothing more to delete: record 3 is still needed
    assert [seq for seq, _ in journal(tmp_path).replay(2).records] == [3]
    gap = journal(tmp_path).replay(0)  # records 1-2 are gone: replaying from 0 is refused
    assert gap.untrusted and gap.records == [] and "gap" in gap.warnings[0]
    j.close()


def test_segment_files_are_private(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    j.append({"op": "a"})
    j.close()
    (segment,) = (tmp_path / "journal").glob("*.log")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    j.append({"op": "a"})
    j.append({"op": "b"})
    j.close()
    (segment,) = (tmp_path / "journal").glob("*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])  # crash mid-write of record 2
    report = journal(tmp_path).replay(0)
    assert [seq for seq, _ in report.records] == [1]
    assert not report.warnings


def test_tampered_record_stops_replay(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    for op in "abc":
        j.append({"op": op})
    j.close()
    (segment,) = (tmp_path / "journal").glob("*.log")
    data = bytearray(segment.read_bytes())
    first_len = int.from_bytes(data[:4], "big")
    data[8 + 32 + first_len + 8 + 32 + 2] ^= 0xFF  # inside record 2's payload
    segment.write_bytes(bytes(data))
    report = journal(tmp_path).replay(0)
    assert [seq for seq, _ in report.records] == [1]
    assert report.untrusted and "failed verification" in report.warnings[0]


def test_corrupted_length_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    j = journal(tmp_path)
    j.open(0)
    for op in "abcde":
        j.append({"op": op})
    j.close()
    (segment,) = (tmp_path / "journal").glob("*.log")
    data = bytearray(segment.read_bytes())
    first_len = int.from_bytes(data[:4], "big")
    data[8 + 32 + first_len] ^= 0x40  # record 2's length now claims more than remains
    segment.write_bytes(bytes(data))
    report = journal(tmp_path).replay(0)
    assert [seq for seq, _ in report.records] == [1]
    assert report.untrusted and "length" in report.warnings[0]


def test_image_round_trip_and_generations(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, KEY, generations=3)
    for i in range(5):
        store.save({"format": 1, "n": i}, journal_seq=i * 10)
    gens = store.list_generations()
    assert [g for g, _, _ in gens] == [3, 4, 5]
    assert store.oldest_journal_seq() == 20
    loaded = store.load_latest()
    assert loaded.payload == {"format": 1, "n": 4} and loaded.generation == 5
    assert loaded.journal_seq == 40 and not loaded.warnings
    for _, _, path in gens:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


class _Bomb:
    """Unpickling this creates a file: proof that an image was (or was not) unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.target, "w"))


def test_tampered_image_is_refused_before_unpickling(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, KEY)
    store.save({"format": 1, "n": "good"}, journal_seq=1)
    path, _, _ = store.save({"format": 1, "n": "newer"}, journal_seq=2)
    target = tmp_path / "pwned"
    evil = dill.dumps({"format": 1, "bomb": _Bomb(str(target))})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(MAGIC) + 32] + evil)  # keep the old signature
    with pytest.raises(ImageTamperedError):
        store.read_verified(path)
    loaded = store.load_latest()
    assert not target.exists()
    assert loaded.payload == {"format": 1, "n": "good"} and loaded.generation == 1
    assert path.name in loaded.warnings[0]


def test_unsigned_and_foreign_images_are_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, KEY)
    store.save({"format": 1, "n": 1}, journal_seq=0)
    (tmp_path / "99999998-000000000000.image").write_bytes(os.urandom(100))
    ImageStore(tmp_path, b"other-key-000000000000000000000000").save({"format": 1}, 0)
    loaded = store.load_latest()
    assert loaded.payload == {"format": 1, "n": 1}
    assert len(loaded.warnings) == 2


def test_no_image_at_all(tmp_path: Path) -> None:
    loaded = ImageStore(tmp_path, KEY).load_latest()
    assert loaded.payload is None and loaded.generation == 0
