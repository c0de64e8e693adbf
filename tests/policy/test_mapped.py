"""Snapshot files: the mapped snapshot answers as the compiled one, and bad files are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockd import urls
from blockd.feeds.authoring import hashed_entry
from blockd.policy import entries as entry_rules
from blockd.policy import mapped, mapped_meta
from blockd.policy.compile import compile_snapshot, empty_snapshot, index_list
from blockd.policy.guards import NeverBlock
from blockd.policy.mapped import SnapshotFileError, open_current, open_mapped, publish
from blockd.policy.snapshot import ListInfo, PolicySnapshot
from blockd.policy.verdict import HostAction, ListSource, Verdict
from tests.factories import NOW

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Probe:
    host: str | None = None
    url: str | None = None


def make(
    hosts: Sequence[str] = ("blocked.example",),
    url_lines: Sequence[str] = ("partial.example/listed/page.html",),
    hashed: Sequence[str] = (),
    nxdomain: Sequence[str] = (),
    never_block: Sequence[str] = (),
    probes: Sequence[Probe] = (),
) -> PolicySnapshot:
    """Compile up to four lists; probes go to the first list that can carry them."""
    kinds: list[tuple[str, entry_rules.Format, Sequence[str], HostAction]] = [
        ("hosts", "hosts", hosts, "notice"),
        ("urls", "urls", url_lines, "notice"),
        ("hashed", "sha256", hashed, "notice"),
        ("nx", "hosts", nxdomain, "nxdomain"),
    ]
    lists = []
    for list_id, fmt, lines, action in kinds:
        if not lines:
            continue
        mine = [p for p in probes if (p.host is not None) == (fmt != "urls")]
        entries = entry_rules.build(fmt, lines, mine)
        source = ListSource("auth", list_id, 7, action)
        info = ListInfo(source, NOW, NOW, entries.count, tuple(entries.probes))
        lists.append(index_list(info, entries))
    return compile_snapshot(lists, ref_key=b"k" * 32, never_block=NeverBlock(never_block))


def answers(snap: PolicySnapshot, names: Sequence[str], paths: Sequence[str]) -> list[object]:
    """Return every answer the snapshot gives about names and their URLs."""
    out: list[object] = [snap.generation, snap.created_at, snap.lists, snap.probes()]
    out.append(dict(snap.versions))
    for name in names:
        out += [snap.host_verdict(name), snap.blocked_host(name)]
        out += [snap.url_verdict(f"http://{name}{path}") for path in paths]
    return out


@pytest.fixture(params=["fast", "sha-only"])
def hash_seed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Open files as this process (fast filters) or as one with another hash seed."""
    if request.param == "sha-only":
        monkeypatch.setattr(mapped, "hash_check", lambda: (1, 2, 3))
    return str(request.param)


def reopened(snap: PolicySnapshot) -> Iterator[PolicySnapshot]:
    with tempfile.TemporaryDirectory() as tmp:
        yield open_mapped(publish(snap, Path(tmp)))


# -- equivalence --------------------------------------------------------------------------

LABELS = st.sampled_from(["a", "www", "cdn", "blocked", "partial", "safe"])
BASES = st.sampled_from(
    ["blocked.example", "partial.example", "other.test", "example.com", "co.uk", "github.io"]
)
HOSTS = st.builds(lambda pre, base: ".".join([*pre, base]), st.lists(LABELS, max_size=3), BASES)
PATHS = ["/", "/listed/", "/listed/page.html", "/x?q=1", "/a/b/c.html"]
URLS = st.builds(lambda h, p: h + p, HOSTS, st.sampled_from(PATHS))


def hashed_lines(hosts: list[str], url_list: list[str], routes: list[str]) -> list[str]:
    lines = [hashed_entry("host", h) for h in hosts]
    lines += [hashed_entry("url", urls.split(f"http://{u}").expression) for u in url_list]
    return lines + [hashed_entry("route", h) for h in routes]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hosts=st.lists(HOSTS, max_size=6),
    url_lines=st.lists(URLS, max_size=6),
    hashed=st.one_of(
        st.just([]),
        st.builds(
            hashed_lines,
            st.lists(HOSTS, max_size=3),
            st.lists(URLS, max_size=3),
            st.lists(HOSTS, max_size=2),
        ),
    ),
    nxdomain=st.lists(HOSTS, max_size=3),
    never_block=st.lists(st.one_of(HOSTS, HOSTS.map(lambda h: f"*.{h}")), max_size=2),
    probe_hosts=st.lists(HOSTS, max_size=1),
    probe_urls=st.lists(URLS.map(lambda u: f"http://{u}"), max_size=1),
    queries=st.lists(HOSTS, min_size=1, max_size=12),
)
@pytest.mark.parametrize("seed", ["fast", "sha-only"])
def test_mapped_snapshot_answers_every_question_as_the_compiled_one(
    seed: str,
    hosts: list[str],
    url_lines: list[str],
    hashed: list[str],
    nxdomain: list[str],
    never_block: list[str],
    probe_hosts: list[str],
    probe_urls: list[str],
    queries: list[str],
) -> None:
    probes = [Probe(host=h) for h in probe_hosts] + [Probe(url=u) for u in probe_urls]
    snap = make(hosts, url_lines, hashed, nxdomain, never_block, probes)
    names = [*queries, *hosts, *(u.partition("/")[0] for u in url_lines), *probe_hosts]
    with pytest.MonkeyPatch.context() as patch:
        if seed == "sha-only":
            patch.setattr(mapped, "hash_check", lambda: (1, 2, 3))
        for copy in reopened(snap):
            assert answers(copy, names, PATHS) == answers(snap, names, PATHS)
            assert copy.never_block.patterns() == snap.never_block.patterns()


def test_public_suffix_never_block_and_probes_hold_in_the_mapped_copy(hash_seed: str) -> None:
    snap = make(
        hosts=["blocked.example", "a.safe.test"],
        hashed=[hashed_entry("host", "co.uk"), hashed_entry("host", "site.test")],
        never_block=["*.safe.test"],
        probes=[Probe(host="selftest.example"), Probe(url="http://probe.example/test/page.html")],
    )
    for copy in reopened(snap):
        assert copy.host_verdict("shop.co.uk") is None  # a hashed public suffix reaches nothing
        assert copy.host_verdict("www.site.test") is not None
        assert copy.host_verdict("a.safe.test") is None  # inside a protected subtree
        assert copy.host_verdict("x.blocked.example") is not None
        probe = copy.host_verdict("selftest.example")
        assert probe is not None and probe.probe
        url = copy.url_verdict("http://probe.example/test/page.html")
        assert (
            url is not None
            and url.probe
            and url == snap.url_verdict("http://probe.example/test/page.html")
        )


def test_empty_snapshot_round_trips() -> None:
    for copy in reopened(empty_snapshot()):
        assert copy.lists == () and copy.host_verdict("anything.example") is None
        assert copy.url_verdict("http://anything.example/x") is None


def test_a_process_with_another_hash_seed_gets_the_same_answers(tmp_path: Path) -> None:
    snap = make(hosts=["blocked.example"], nxdomain=["nx.test"])
    path = publish(snap, tmp_path)
    names = ["blocked.example", "a.blocked.example", "nx.test", "partial.example", "x.test"]
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from blockd.policy.mapped import open_mapped\n"
        "snap = open_mapped(Path(sys.argv[1]))\n"
        "out = [snap.host_verdict(n) for n in sys.argv[2:]]\n"
        "out.append(snap.url_verdict('http://partial.example/listed/page.html'))\n"
        "print(json.dumps([None if v is None else v.entry_ref for v in out]))\n"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script, str(path), *names],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        mine: list[Verdict | None] = [snap.host_verdict(n) for n in names]
        mine.append(snap.url_verdict("http://partial.example/listed/page.html"))
        assert json.loads(run.stdout) == [None if v is None else v.entry_ref for v in mine]


# -- sharing ------------------------------------------------------------------------------


def test_arrays_are_views_of_the_read_only_mapping_not_copies(tmp_path: Path) -> None:
    path = publish(make(hosts=[f"h{i}.example" for i in range(500)]), tmp_path)
    copy = open_mapped(path)
    for keys in (copy.hosts, copy.routes, copy.urls):
        parts = keys.parts()
        for buffer in (parts.digests, parts.owners, parts.starts, parts.filter):
            assert isinstance(buffer, memoryview) and buffer.readonly
            assert type(buffer.obj).__name__ == "mmap"
    if Path("/proc/self/maps").exists():
        assert str(path) in Path("/proc/self/maps").read_text()


# -- hostile files ------------------------------------------------------------------------


def reseal(data: bytes | bytearray) -> bytes:
    """Return data with a correct checksum, so checks other than the checksum are reached."""
    out = bytearray(data)
    out[32:64] = bytes(32)
    out[32:64] = hashlib.sha256(out).digest()
    return bytes(out)


def sections(data: bytes) -> list[tuple[int, int]]:
    return [
        mapped.ENTRY.unpack_from(data, mapped.HEADER.size + i * mapped.ENTRY.size)[2:]
        for i in range(mapped.SECTIONS)
    ]


def set_section(data: bytes, index: int, offset: int, length: int) -> bytes:
    out = bytearray(data)
    at = mapped.HEADER.size + index * mapped.ENTRY.size
    kind, reserved, _, _ = mapped.ENTRY.unpack_from(out, at)
    mapped.ENTRY.pack_into(out, at, kind, reserved, offset, length)
    return reseal(out)


@pytest.fixture(scope="module")
def good() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        snap = make(
            hosts=[f"h{i}.example" for i in range(300)],
            url_lines=["partial.example/listed/page.html"],
            hashed=[hashed_entry("host", "hashed.test")],
        )
        return publish(snap, Path(tmp)).read_bytes()


def refused(tmp_path: Path, data: bytes, match: str | None = None) -> SnapshotFileError:
    path = tmp_path / "hostile.bps"
    path.write_bytes(data)
    with pytest.raises(SnapshotFileError, match=match) as info:
        open_mapped(path)
    assert str(path) in str(info.value)
    return info.value


def test_a_file_truncated_at_any_boundary_is_refused(tmp_path: Path, good: bytes) -> None:
    cuts = {0, 1, 7, 8, 63, 64, mapped.TABLE_END - 1, mapped.TABLE_END, len(good) - 1}
    for offset, length in sections(good):
        cuts |= {offset - 1, offset, offset + 1, offset + length - 1, offset + length}
    for cut in sorted(c for c in cuts if 0 <= c < len(good)):
        refused(tmp_path, good[:cut])


def test_a_file_with_bytes_appended_is_refused(tmp_path: Path, good: bytes) -> None:
    refused(tmp_path, good + b"\0" * 64, "truncated")


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_flipped_byte_is_refused(tmp_path: Path, good: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(good) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(good)
    damaged[at] ^= 1 << bit
    refused(tmp_path, bytes(damaged))


def test_damage_anywhere_is_caught_by_the_checksum(tmp_path: Path, good: bytes) -> None:
    for at in range(64, len(good), 97):
        damaged = bytearray(good)
        damaged[at] ^= 0x40
        refused(tmp_path, bytes(damaged), "checksum")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda b: b"NOTBLKD\0" + b[8:], "wrong magic"),
        (lambda b: b[:8] + (2).to_bytes(4, "little") + b[12:], "format version 2"),
        (lambda b: b[:12] + (12).to_bytes(4, "little") + b[12 + 4 :], "12 sections"),
        (lambda b: b[:16] + (99).to_bytes(8, "little") + b[24:], "generation 99"),
    ],
)
def test_foreign_or_newer_headers_are_refused_by_name(
    tmp_path: Path, good: bytes, change: object, match: str
) -> None:
    assert callable(change)
    refused(tmp_path, reseal(change(good)), match)


def test_a_length_the_file_does_not_have_is_refused(tmp_path: Path, good: bytes) -> None:
    huge = good[:24] + (1 << 62).to_bytes(8, "little") + good[32:]
    refused(tmp_path, reseal(huge), "truncated")


@pytest.mark.parametrize(
    ("index", "offset", "length"),
    [
        (1, 1 << 60, 8),  # far beyond the end
        (1, None, 1 << 62),  # huge length
        (2, 0, 2),  # over the header
        (3, None, 3),  # not whole items
        (5, 64 * 3, 64),  # unaligned or overlapping the table
        (0, None, 1 << 40),
    ],
)
def test_sections_pointing_outside_their_place_are_refused(
    tmp_path: Path, good: bytes, index: int, offset: int | None, length: int
) -> None:
    actual_offset, _ = sections(good)[index]
    refused(
        tmp_path,
        set_section(good, index, actual_offset if offset is None else offset, length),
        f"section {index}",
    )


def test_arrays_that_break_the_lookup_invariants_are_refused(tmp_path: Path, good: bytes) -> None:
    offset, _ = sections(good)[1]  # hosts digests
    swapped = bytearray(good)
    swapped[offset : offset + 8], swapped[offset + 8 : offset + 16] = (
        good[offset + 8 : offset + 16],
        good[offset : offset + 8],
    )
    refused(tmp_path, reseal(swapped), "hosts: digests are not sorted")
    owners, _ = sections(good)[2]
    beyond = bytearray(good)
    beyond[owners : owners + 2] = (9).to_bytes(2, "little")
    refused(tmp_path, reseal(beyond), "owner beyond")
    starts, _ = sections(good)[3]
    shifted = bytearray(good)
    shifted[starts + 4 : starts + 8] = (1).to_bytes(4, "little")
    refused(tmp_path, reseal(shifted), "bucket starts")


def with_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: object) -> bytes:
    """Return a well-formed, sealed file whose metadata JSON was edited."""
    assert callable(edit)
    real = mapped_meta.meta_to_json

    def edited(*args: object, **kwargs: object) -> bytes:
        doc = json.loads(real(*args, **kwargs))  # type: ignore[arg-type]
        edit(doc)
        return json.dumps(doc).encode()

    monkeypatch.setattr(mapped, "meta_to_json", edited)
    path = publish(make(probes=[Probe(host="selftest.example")]), tmp_path / "edited")
    monkeypatch.undo()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("ref_key"), "'ref_key' is missing"),
        (lambda d: d.update(generation="1"), "'generation' is not of type int"),
        (lambda d: d.update(generation=True), "'generation' is not of type int"),
        (lambda d: d["lists"][0].update(action="block"), "'action'"),
        (lambda d: d["lists"][0].update(expires="tomorrow"), "'expires'"),
        (lambda d: d["never_block"].update(rule="never-block/2"), "never-block rule"),
        (lambda d: d["never_block"].update(patterns=["bad name!"]), "never-block"),
        (lambda d: d.update(suffixes="0" * 64), "Public Suffix List"),
        (lambda d: d["sets"]["hosts"].update(size=1), "hosts: 1 owners|hosts: .*digests"),
        (lambda d: d["sets"]["urls"].update(mask=7), "urls: filter"),
        (lambda d: d["sets"]["routes"].update(shift=60), "routes: .*bucket"),
        (lambda d: d.update(probe_keys=[["host", 99, "0" * 16]]), "probe key column"),
        (lambda d: d.update(probe_keys=[["dns", 0, "0" * 16]]), "probe key question"),
    ],
)
def test_inconsistent_metadata_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: object, match: str
) -> None:
    refused(tmp_path, with_meta(tmp_path, monkeypatch, edit), match)


def test_metadata_that_is_not_json_is_refused(tmp_path: Path, good: bytes) -> None:
    offset, _ = sections(good)[0]
    refused(tmp_path, set_section(good, 0, offset, 3), "metadata: not JSON")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_not_crashed_on(tmp_path: Path, data: bytes) -> None:
    refused(tmp_path, data)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_resealed_random_damage_is_refused_or_answers_without_crashing(
    tmp_path: Path, good: bytes, data: st.DataObject
) -> None:
    damaged = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(mapped.HEADER.size, len(good) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.bps"
    path.write_bytes(reseal(damaged))
    try:
        snap = open_mapped(path)
    except SnapshotFileError:
        return
    for name in ("h1.example", "partial.example", "hashed.test", "x.test"):
        snap.host_verdict(name)
    snap.url_verdict("http://partial.example/listed/page.html")


# -- publishing ---------------------------------------------------------------------------


def test_publish_names_the_generation_and_makes_it_current(tmp_path: Path) -> None:
    snap = make()
    path = publish(snap, tmp_path / "policy")
    assert f"{snap.generation:010d}" in path.name
    assert mapped.current(tmp_path / "policy") == path
    assert (path.stat().st_mode & 0o777) == 0o600  # it carries the entry-reference key
    assert ((tmp_path / "policy").stat().st_mode & 0o777) == 0o700
    copy = open_current(tmp_path / "policy")
    assert copy is not None and copy.generation == snap.generation
    assert open_current(tmp_path / "nothing") is None


def test_old_files_are_removed_except_the_one_in_force(tmp_path: Path) -> None:
    first = publish(make(hosts=["one.example"]), tmp_path)
    still_mapped = open_mapped(first)
    (tmp_path / ".snapshot-0000000001-000000000000.bps.999.tmp").write_bytes(b"crashed")
    publish(make(hosts=["two.example"]), tmp_path)
    last = publish(make(hosts=["three.example"]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([last.name, "current"])
    # A process that mapped a removed file keeps answering from it.
    assert still_mapped.host_verdict("one.example") is not None


def test_a_failed_publish_leaves_the_previous_file_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = publish(make(hosts=["one.example"]), tmp_path)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        publish(make(hosts=["two.example"]), tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "current"])
    copy = open_current(tmp_path)
    assert copy is not None and copy.host_verdict("one.example") is not None


def test_the_final_name_only_ever_names_a_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    seen: list[int] = []

    def checking_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).suffix == ".bps":
            assert not Path(dst).exists()
            seen.append(open_mapped(Path(src)).generation)  # whole before it gets its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    snap = make()
    publish(snap, tmp_path)
    assert seen == [snap.generation]


def test_readers_never_see_a_half_written_snapshot(tmp_path: Path) -> None:
    snaps = [make(hosts=[f"h{i}-{n}.example" for i in range(2000)]) for n in range(2)]
    generations = {s.generation for s in snaps}
    publish(snaps[0], tmp_path)
    done = threading.Event()
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            for n in range(30):
                publish(snaps[n % 2], tmp_path)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    opened = 0
    while not done.is_set() or opened == 0:
        copy = open_current(tmp_path)
        assert copy is not None and copy.generation in generations
        opened += 1
    thread.join()
    assert not errors


def test_meta_hash_check_is_this_processes_string_hash() -> None:
    assert mapped_meta.hash_check() == tuple(hash(c) for c in mapped_meta._CANARIES)
