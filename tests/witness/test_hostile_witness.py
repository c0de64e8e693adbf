"""A hostile client against a real `blockd witness run` process (C2SP tlog-witness).

One witness process serves the whole module. Every refused request must get the spec's
status (a 4xx where the spec is silent), leave the witness's state file byte for byte as it
was, and leave the witness serving: after each case the witness cosigns the next valid
checkpoint of the log.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from blockd.audit import merkle, note
from blockd.witness.protocol import MAX_BODY
from tests.witness.process import Running, witness, witness_key

pytestmark = pytest.mark.slow
ORIGIN = "isp.example/blockd/hostile"
LOG = note.Signer.from_seed("hostile-operator", bytes([3]) * 32)  # test keys
OTHER = note.Signer.from_seed("hostile-operator", bytes([4]) * 32)  # same name, other key
STRANGER = note.Signer.from_seed("stranger.example", bytes([5]) * 32)
LEAVES = [merkle.leaf_hash(b"entry %d" % i) for i in range(4000)]
FORKED = [merkle.leaf_hash(b"forked %d" % i) for i in range(4000)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def text(size: int, leaves: list[bytes] = LEAVES, *extensions: str, origin: str = ORIGIN) -> str:
    return note.Checkpoint(origin, size, merkle.root(leaves[:size]), extensions).to_text()


def signed(size: int, leaves: list[bytes] = LEAVES, *extensions: str, origin: str = ORIGIN) -> str:
    return note.sign_note(text(size, leaves, *extensions, origin=origin), LOG)


def body(old: int | str, proof: list[bytes], checkpoint: str) -> bytes:
    lines = [f"old {old}", *(b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint).encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(url: str, request: bytes, timeout: float = 15.0) -> Answer:
    """Send raw bytes to the witness, read the answer until it closes the connection."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(request)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), raw[:200]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Answer(int(lines[0].split()[1]), headers, rest)


def post(
    url: str,
    data: bytes,
    *,
    method: str = "POST",
    target: str = "/add-checkpoint",
    headers: str = "",
) -> Answer:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: witness\r\nConnection: close\r\n"
        f"Content-Length: {len(data)}\r\n{headers}\r\n"
    )
    return exchange(url, head.encode("latin-1") + data)


@dataclass
class Witness:
    """The module's witness process, and the size it holds."""

    running: Running
    state_file: Path
    evidence: Path
    size: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.running.url

    def state(self) -> bytes:
        return self.state_file.read_bytes()

    def advance(self, step: int = 1) -> None:
        """The witness cosigns the next checkpoint: it still serves and its state is right."""
        new = self.size + step
        proof = merkle.consistency_proof(self.size, new, LEAVES) if self.size else []
        answer = post(self.url, body(self.size, proof, signed(new)))
        assert answer.status == 200, (answer, self.running.stderr()[-2000:])
        assert answer.body.decode().startswith("— regulator.example/witness ")
        self.size = new
        assert f"\n{new}\n" in self.state_file.read_text()


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witness]:
    tmp = tmp_path_factory.mktemp("hostile-witness")
    key, _ = witness_key(tmp)
    with witness(key, tmp / "state", {ORIGIN: LOG.verifier.vkey}) as running:
        state_file = tmp / "state" / "checkpoints" / quote(ORIGIN, safe="")
        wit = Witness(running, state_file, tmp / "state" / "evidence")
        wit.advance(10)
        yield wit
        assert running.proc.poll() is None, running.stderr()


def refused(w: Witness, data: bytes, status: int, **how: str) -> Answer:
    """Send data; it must be refused with status, leaving the state file as it was."""
    before = w.state()
    answer = post(w.url, data, **how)
    assert answer.status == status, (answer, data[:300])
    assert w.state() == before
    return answer


# -- the old size line -------------------------------------------------------------------------


OLD_SIZES = [
    "-1",
    "-0",
    "0{h}",
    "00",
    "+{h}",
    " {h}",
    "{h} ",
    "\t{h}",
    "{h}\r",
    "{h}.0",
    "1e1",
    "0x{h:x}",
    "{h}_0",
    str(2**64),
    str(2**64 - 1),
    "9" * 21,
    "9" * 5000,
    "١٠",  # ARABIC-INDIC digits: 10 to int(), not to the spec
    "１０",  # FULLWIDTH digits
    "𝟏𝟎",  # MATHEMATICAL BOLD digits
    "",
]


@pytest.mark.parametrize("old", OLD_SIZES)
def test_a_malformed_old_size_is_400(w: Witness, old: str) -> None:
    size = old.format(h=w.size)
    refused(w, body(size, [], signed(w.size)), 400)


@pytest.mark.parametrize(
    "first", ["OLD {h}", "old{h}", "old  {h}", "old\t{h}", "new {h}", " old {h}", "old {h} 1"]
)
def test_a_malformed_old_line_is_400(w: Witness, first: str) -> None:
    line = first.format(h=w.size)
    refused(w, f"{line}\n\n{signed(w.size)}".encode(), 400)


def test_an_old_size_above_the_checkpoint_is_400_and_a_stale_one_409(w: Witness) -> None:
    refused(w, body(w.size + 1, [], signed(w.size)), 400)
    for old in (0, w.size - 1, w.size + 1):
        answer = refused(w, body(old, [], signed(w.size + 2)), 409)
        assert answer.headers["content-type"].startswith("text/x.tlog.size")
        assert answer.body == f"{w.size}\n".encode()
    w.advance()


# -- consistency proof lines -------------------------------------------------------------------


def proof_lines(w: Witness, new: int) -> list[str]:
    return [b64(h) for h in merkle.consistency_proof(w.size, new, LEAVES)]


def with_lines(w: Witness, lines: list[str], new: int) -> bytes:
    return ("\n".join([f"old {w.size}", *lines]) + "\n\n" + signed(new)).encode()


@pytest.mark.parametrize(
    "bad",
    [
        "not base64!",
        b64(bytes(31)),
        b64(bytes(33)),
        b64(bytes(32)).rstrip("="),
        b64(bytes(32)) + "==",
        b64(b"\xfb\xff" * 16).replace("+", "-").replace("/", "_"),  # URL-safe alphabet
        " " + b64(bytes(32)),
        b64(bytes(32)) + " ",
        b64(bytes(32)) + "\r",
        b64(bytes(32))[:-2] + "B=",  # non-canonical: padding bits set
    ],
)
def test_a_proof_line_that_is_not_a_base64_hash_is_400(w: Witness, bad: str) -> None:
    lines = proof_lines(w, w.size + 5)
    refused(w, with_lines(w, [*lines[:-1], bad], w.size + 5), 400)
    refused(w, with_lines(w, [bad, *lines], w.size + 5), 400)


def test_an_empty_proof_line_ends_the_proof(w: Witness) -> None:
    """A blank line among the proof lines ends them: what follows is read as the checkpoint."""
    lines = proof_lines(w, w.size + 5)
    refused(w, with_lines(w, [*lines, ""], w.size + 5), 400)  # the checkpoint has no origin
    refused(w, with_lines(w, ["", *lines], w.size + 5), 404)  # its "origin" is a hash


def test_more_than_63_proof_lines_is_400_and_63_wrong_ones_422(w: Witness) -> None:
    filler = [b64(bytes([i]) * 32) for i in range(64)]
    refused(w, with_lines(w, filler, w.size + 5), 400)
    refused(w, with_lines(w, filler[:63], w.size + 5), 422)


def test_a_proof_that_does_not_verify_is_422(w: Witness) -> None:
    new = w.size + 7
    lines = proof_lines(w, new)
    cases = [
        lines[::-1],
        lines[:-1],
        [*lines, lines[0]],
        [lines[0], *lines],
        [b64(bytes(32))] * len(lines),
        [b64(h) for h in merkle.consistency_proof(w.size, new, FORKED)],
        proof_lines(w, new + 1),
    ]
    for case in cases:
        refused(w, with_lines(w, case, new), 422)
    refused(w, with_lines(w, [], new), 422)
    w.advance()


# -- the checkpoint note -----------------------------------------------------------------------


def forged(signer: note.Signer, message: str, key_id: int | None = None) -> str:
    """A signature line by signer's name, over message, claiming key_id (default: its own)."""
    kid = signer.key_id if key_id is None else key_id
    raw = kid.to_bytes(4, "big") + signer.sign(message.encode())
    return f"— {signer.name} {b64(raw)}\n"


def notes(size: int) -> dict[str, tuple[str, int]]:
    """Hostile checkpoints of size with the status each must get."""
    t = text(size)
    good = signed(size)
    good_line = good[len(t) + 1 :]
    bad_sig = bytearray(base64.b64decode(good_line.split()[-1]))
    bad_sig[-1] ^= 1
    flipped = f"— {LOG.name} {b64(bytes(bad_sig))}\n"
    return {
        "crlf": (good.replace("\n", "\r\n"), 404),  # the origin line ends in CR: unknown
        "cr in the body": (t[:-1] + "\r\n\n" + good_line, 400),
        "no blank line": (t + good_line, 400),
        "two blank lines": (t + "\n\n" + good_line, 403),  # signed text != t + "\n"
        "no final newline": (good[:-1], 400),
        "an empty signature block": (t + "\n", 400),
        "a blank signature line": (good + "\n", 400),
        "a hyphen not an em dash": (t + "\n" + good_line.replace("—", "-"), 400),
        "unknown key only": (t + "\n" + forged(STRANGER, t), 403),
        "same name, other key": (t + "\n" + forged(OTHER, t), 403),
        "other key claims the log's key ID": (t + "\n" + forged(OTHER, t, LOG.key_id), 403),
        "a bad signature": (t + "\n" + flipped, 403),
        "valid then forged": (good + flipped, 403),
        "forged then valid": (t + "\n" + flipped + good_line, 403),
        "signature over another text": (
            t + "\n" + forged(LOG, text(size, FORKED)),
            403,
        ),
        "101 signatures": (good + forged(STRANGER, t) * 100, 400),
        "a duplicated origin line": (note.sign_note(ORIGIN + "\n" + t, LOG), 400),
        "no root line": (note.sign_note("\n".join(t.split("\n")[:2]) + "\n", LOG), 400),
        "an empty extension line": (note.sign_note(t + "\n", LOG), 400),
        "a NUL in an extension": (t + "x\x00y\n\n" + good_line, 400),
        "a NUL in the origin": (ORIGIN + "\x00" + good[len(ORIGIN) :], 404),
        "a size with a sign": (note.sign_note(t.replace(f"\n{size}\n", f"\n+{size}\n"), LOG), 400),
        "a size of 2^64": (note.sign_note(t.replace(f"\n{size}\n", f"\n{2**64}\n"), LOG), 400),
        "a root of 31 bytes": (
            note.sign_note(t.replace(t.split("\n")[2], b64(bytes(31))), LOG),
            400,
        ),
        "an unknown origin": (signed(size, origin="isp.example/other"), 404),
        "the origin with a trailing space": (signed(size, origin=ORIGIN + " "), 404),
        "an origin line only": (ORIGIN + "\n", 400),
    }


def test_hostile_checkpoint_notes_are_refused(w: Witness) -> None:
    proof = merkle.consistency_proof(w.size, w.size + 3, LEAVES)
    wrong = {}
    for name, (checkpoint, status) in notes(w.size + 3).items():
        before = w.state()
        answer = post(w.url, body(w.size, proof, checkpoint))
        if answer.status != status:
            wrong[name] = (answer.status, answer.body)
        assert answer.body.endswith(b"\n") and w.state() == before, name
    assert not wrong
    w.advance()


def test_invalid_utf8_and_nul_bytes_are_400(w: Witness) -> None:
    good = body(w.size, [], signed(w.size)).decode()
    for raw in (
        good.encode()[:-3] + b"\xff\xfe\n",
        good.replace(ORIGIN, ORIGIN[:-1] + "\udcff", 1).encode("utf-8", "surrogateescape"),
        good.encode().replace(b"\xe2\x80\x94", b"\xe2\x80", 1),
        good.encode().replace(b"\n\n", b"\n\x00\n", 1),
        b"\x00" * 100,
        b"\xef\xbb\xbf" + good.encode(),  # a byte order mark
        b"",
        b"\n\n",
        b"old 0\n\n",
    ):
        refused(w, raw, 400)


def test_a_same_size_checkpoint_with_another_root_is_409_with_evidence(w: Witness) -> None:
    before = set(w.evidence.iterdir())
    answer = refused(w, body(w.size, [], signed(w.size, FORKED)), 409)
    assert answer.body == f"{w.size}\n".encode()
    assert len(set(w.evidence.iterdir()) - before) == 1
    w.advance()


def test_extra_signatures_by_unknown_keys_are_ignored(w: Witness) -> None:
    new = w.size + 2
    proof = merkle.consistency_proof(w.size, new, LEAVES)
    t = text(new)
    cp = note.sign_note(t, STRANGER) + forged(LOG, t) + forged(OTHER, t) + forged(STRANGER, t)
    answer = post(w.url, body(w.size, proof, cp))
    assert answer.status == 200, answer
    w.size = new
    w.advance()


def test_a_huge_extension_line_under_the_cap_is_cosigned(w: Witness) -> None:
    def with_extension(n: int) -> bytes:
        return body(w.size, [], signed(w.size, LEAVES, "x" * (n + 1)))

    pad = MAX_BODY - len(with_extension(0))
    exact = with_extension(pad)
    assert len(exact) == MAX_BODY
    answer = post(w.url, exact)
    assert answer.status == 200, answer  # the same tree, a new extension: cosigned
    refused(w, with_extension(pad + 1), 413)
    refused(w, with_extension(pad + 100_000), 413)
    w.advance()


def test_chunked_bodies_over_the_cap_are_413(w: Witness) -> None:
    before = w.state()
    data = body(w.size, [], signed(w.size, LEAVES, "x" * MAX_BODY))
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + 4096]), data[i : i + 4096])
        for i in range(0, len(data), 4096)
    )
    head = b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nConnection: close\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    answer = exchange(w.url, head + chunks + b"0\r\n\r\n")
    assert answer.status == 413
    assert w.state() == before
    w.advance()


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/add-checkpoint", 405),
        ("PUT", "/add-checkpoint", 405),
        ("DELETE", "/add-checkpoint", 405),
        ("PATCH", "/add-checkpoint", 405),
        ("POST", "/add-checkpoint/", 404),
        ("POST", "//add-checkpoint", 404),
        ("POST", "/add-checkpoint/..", 404),
        ("POST", "/x/../add-checkpoint/", 404),
        ("POST", "/add-checkpoint%2F", 404),
        ("POST", "/add-checkpoint%00", 404),
        ("POST", "/ADD-CHECKPOINT", 404),
        ("POST", "/", 404),
        ("POST", "/checkpoint", 404),
    ],
)
def test_other_methods_and_paths_are_refused(
    w: Witness, method: str, target: str, status: int
) -> None:
    data = body(w.size, [], signed(w.size, FORKED))  # would be evidence if it were judged
    before = set(w.evidence.iterdir())
    refused(w, data, status, method=method, target=target)
    assert set(w.evidence.iterdir()) == before


@pytest.mark.parametrize(
    "target", ["/add%2Dcheckpoint", "/%61dd-checkpoint", "/add-checkpoint?x=1"]
)
def test_equivalent_request_targets_reach_add_checkpoint_or_404(w: Witness, target: str) -> None:
    """RFC 3986 §6.2.2: percent-encoded unreserved characters are the same path."""
    before = w.state()
    answer = post(w.url, body(w.size, [], signed(w.size)), target=target)
    assert answer.status in (200, 404), answer
    assert w.state() == before or answer.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: +5\r\n\r\nold 0",
        b"POST /add-checkpoint HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /add-checkpoint HTTP/1.1\r\nHost: " + b"h" * 20000 + b"\r\n\r\n",
        b"POST /add-checkpoint HTTP/9.9\r\n\r\n",
        b"POST /add-checkpoint\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),  # a TLS ClientHello
        b"POST /add-checkpoint HTTP/1.1\r\nX: \x00\r\n\r\n",
        b"POST /add-checkpoint HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n",
    ],
)
def test_malformed_http_is_4xx(w: Witness, request_bytes: bytes) -> None:
    before = w.state()
    try:
        answer = exchange(w.url, request_bytes)
    except (AssertionError, ConnectionResetError):
        pass  # closing the connection without an answer is a fine refusal too
    else:
        assert 400 <= answer.status < 500, answer
    assert w.state() == before


def test_expect_continue_and_keep_alive_requests_are_served(w: Witness) -> None:
    first = body(w.size, [], signed(w.size))
    head = (
        f"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: {len(first)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    answer = exchange(w.url, head + first + post_bytes(first, close=True))
    assert answer.status in (100, 200)
    w.advance()


def post_bytes(data: bytes, *, close: bool = False) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return (
        f"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n{conn}Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


# -- many clients, slow clients -----------------------------------------------------------------


def test_slow_loris_connections_do_not_stop_the_witness(w: Witness) -> None:
    parts = urlsplit(w.url)
    assert parts.hostname is not None and parts.port is not None
    host, port = parts.hostname, parts.port
    dribblers = [socket.create_connection((host, port), timeout=5) for _ in range(100)]
    try:
        for s in dribblers:
            s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nX-Slow: ")
        for _ in range(3):
            for s in dribblers:
                s.sendall(b"a")
            w.advance()  # served while 100 clients dribble their headers
        half = [socket.create_connection((host, port), timeout=5) for _ in range(50)]
        data = body(w.size, [], signed(w.size))
        for s in half:  # headers done, the body never finishes
            s.sendall(post_bytes(data)[: -len(data) // 2])
        w.advance()
        for s in half:
            s.close()
    finally:
        for s in dribblers:
            s.close()
    w.advance()


def test_many_concurrent_submissions_are_serialised(w: Witness) -> None:
    """Racing submissions from one old size: exactly one wins, the rest get 409 (no rollback)."""
    old = w.size
    answers: dict[int, Answer] = {}

    def submit(new: int) -> None:
        proof = merkle.consistency_proof(old, new, LEAVES)
        answers[new] = post(w.url, body(old, proof, signed(new)))

    threads = [threading.Thread(target=submit, args=(old + k,)) for k in range(1, 41)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(a.status for a in answers.values())
    assert statuses == [200] + [409] * 39, statuses
    (won,) = (n for n, a in answers.items() if a.status == 200)
    losers = {a.body for a in answers.values() if a.status == 409}
    assert losers == {f"{won}\n".encode()}
    assert f"\n{won}\n" in w.state_file.read_text()
    w.size = won
    w.advance()


def test_idle_connections_and_garbage_floods_leave_it_serving(w: Witness) -> None:
    parts = urlsplit(w.url)
    assert parts.hostname is not None and parts.port is not None
    idle = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(200)]
    try:
        garbage = [
            socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(20)
        ]
        for s in garbage:
            with_shutdown_after(s, bytes(range(256)) * 64)
        w.advance()
    finally:
        for s in idle:
            s.close()
    w.advance()


def with_shutdown_after(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass  # the witness closed the connection on the garbage: fine
    finally:
        s.close()
