"""Submit each new checkpoint to the configured witnesses and keep their cosignatures.

C2SP tlog-witness, client side: POST `<url>/add-checkpoint` with the size the witness holds
and a consistency proof from it. A 409 names the size the witness holds: the checkpoint is
sent again with a proof from that size (unless it is the same size, which is a fork the
witness refused, or a larger one, which this checkpoint cannot extend). A witness that is
down or refuses is tried again with exponential back-off and jitter, capped at `retry_max`
seconds; a newer checkpoint replaces the one being retried. All of it runs in one task of
the supervisor, never on the query path; the proofs are computed in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from blockd.audit import merkle, note
from blockd.audit.cosignature import CosignatureVerifier, split_lines
from blockd.audit.cosigned import CosignatureStore
from blockd.audit.log import MerkleLog
from blockd.metrics.catalogue import WITNESS_OUTCOMES

log = logging.getLogger(__name__)
MAX_ANSWER = 64 * 1024
MAX_ROUNDS = 3  # submissions of one checkpoint to one witness per attempt (409 resends)
OUTCOMES = WITNESS_OUTCOMES  # of one attempt: the outcome label of the metric


@dataclass(frozen=True)
class WitnessTarget:
    """A configured witness: its submission prefix and its cosignature key."""

    url: str
    verifier: CosignatureVerifier

    @property
    def label(self) -> str:
        """Return the witness's name and key ID, as stored and shown."""
        return f"{self.verifier.name}+{self.verifier.key_id:08x}"


@dataclass
class WitnessProgress:
    """What blockd knows of one witness."""

    target: WitnessTarget
    held: int = 0  # the size we believe the witness holds for our log
    done: str = ""  # the checkpoint body it last cosigned for us
    cosigned_size: int | None = None
    cosigned_time: float | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: int = 0  # attempts failed in a row
    next_try: float = 0.0  # monotonic time before which no retry is made
    problem: str = ""  # why the last attempt failed; empty after a cosignature


class Witnessing:
    """Get every new checkpoint of log cosigned by each witness, in the background."""

    def __init__(
        self,
        log: MerkleLog,
        witnesses: Sequence[WitnessTarget],
        *,
        timeout: float = 10.0,
        retry_max: float = 300.0,
        retry_base: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare; nothing is sent until start() or cosign()."""
        self.log = log
        self.store = CosignatureStore(log.path)
        self.states = [WitnessProgress(w) for w in witnesses]
        for s in self.states:
            latest = self.store.latest(s.target.label)
            if latest is not None:
                s.held, s.cosigned_size, s.cosigned_time = latest[0], latest[0], latest[1]
        self.timeout = timeout
        self.retry_max = retry_max
        self.retry_base = retry_base
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """Say a new checkpoint was signed."""
        self._wake.set()

    def start(self) -> None:
        """Start submitting in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop submitting; close connections and the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.store.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.submit_latest()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("witness submission failed; trying again later")
            now = self.clock()
            waits = [s.next_try - now for s in self.states if s.problem]
            try:
                async with asyncio.timeout(max(0.05, min(waits)) if waits else None):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def submit_latest(self, *, force: bool = False) -> dict[str, str]:
        """Submit the latest checkpoint to each witness that lacks it and is due a try."""
        notes = await asyncio.to_thread(self.log.checkpoints)
        if not notes:
            return {}
        signed = notes[-1]
        text, _ = note.open_note(signed, [self.log.signer.verifier])
        cp = note.Checkpoint.parse(text)
        now = self.clock()
        due = [
            s
            for s in self.states
            if s.done != text and (force or not s.problem or now >= s.next_try)
        ]
        results = await asyncio.gather(*(self._attempt(s, signed, text, cp) for s in due))
        return {s.target.label: r for s, r in zip(due, results, strict=True)}

    async def cosign(self) -> dict[str, str]:
        """Submit the latest checkpoint to every witness now, whatever its back-off."""
        return await self.submit_latest(force=True)

    async def _attempt(
        self, s: WitnessProgress, signed: str, text: str, cp: note.Checkpoint
    ) -> str:
        """Submit one checkpoint to one witness, following 409s; record the outcome."""
        outcome, problem = "error", ""
        try:
            outcome, problem = await self._rounds(s, signed, text, cp)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            problem = f"unreachable: {e.__class__.__name__} {e}".strip()
        s.outcomes[outcome] += 1
        if outcome == "cosigned":
            s.failures, s.problem, s.done = 0, "", text
            log.info("witness %s cosigned %s size %d", s.target.label, cp.origin, cp.size)
        else:
            s.failures += 1
            s.problem = problem
            delay = min(self.retry_max, self.retry_base * 2 ** min(s.failures - 1, 30))
            s.next_try = self.clock() + delay * random.uniform(0.5, 1.0)
            log.warning(
                "witness %s did not cosign size %d (%s): %s; retry in %.0f s",
                s.target.label,
                cp.size,
                outcome,
                problem,
                s.next_try - self.clock(),
            )
        return outcome

    async def _rounds(
        self, s: WitnessProgress, signed: str, text: str, cp: note.Checkpoint
    ) -> tuple[str, str]:
        """Return (outcome, problem) of submitting until cosigned or refused."""
        outcome = "error"
        for _ in range(MAX_ROUNDS):
            if s.held > cp.size:
                return "conflict", f"the witness holds size {s.held}, above {cp.size}"
            proof = await asyncio.to_thread(self._proof, s.held, cp.size)
            body = "".join(
                [f"old {s.held}\n", *(base64.b64encode(h).decode() + "\n" for h in proof), "\n"]
            )
            status, answer = await self._post(s.target, (body + signed).encode())
            if status == 200:
                return self._keep(s, answer, text, cp)
            if status == 409:
                size = _size(answer)
                if size is None:
                    return "refused", "409 without a size"
                if size == s.held:
                    return "fork", f"the witness holds another tree of size {size}"
                s.held, outcome = size, "conflict"
                continue
            if status == 422:
                return "inconsistent", f"the witness says the proof from {s.held} fails"
            if status >= 500:
                return "error", f"HTTP {status}: {answer[:200].strip()}"
            return "refused", f"HTTP {status}: {answer[:200].strip()}"
        return outcome, "the witness's size kept changing"

    def _keep(
        self, s: WitnessProgress, answer: str, text: str, cp: note.Checkpoint
    ) -> tuple[str, str]:
        """Verify and store the cosignature in a 200 answer."""
        verifier = s.target.verifier
        for line in split_lines(answer):
            timestamp = verifier.timestamp(line, text)
            if timestamp is not None:
                self.store.add(text, s.target.label, cp.size, timestamp, line)
                s.held, s.cosigned_size, s.cosigned_time = cp.size, cp.size, float(timestamp)
                return "cosigned", ""
        return "invalid", "the answer holds no valid cosignature from the configured key"

    def _proof(self, old: int, new: int) -> list[bytes]:
        if old == 0 or old == new:
            return []
        return merkle.consistency_proof(old, new, self.log.leaf_hashes(0, new))

    async def _post(self, target: WitnessTarget, body: bytes) -> tuple[int, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        url = target.url.rstrip("/") + "/add-checkpoint"
        async with self._session.post(url, data=body) as r:
            data = await r.content.read(MAX_ANSWER)
            return r.status, data.decode("utf-8", "replace")


def _size(answer: str) -> int | None:
    text = answer.removesuffix("\n")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 21 else None


class _WitnessSetting(Protocol):
    url: str
    key: str


def targets(settings: Sequence[_WitnessSetting]) -> list[WitnessTarget]:
    """Return the configured witnesses; raise ValueError naming a bad key."""
    out = []
    for w in settings:
        try:
            out.append(WitnessTarget(w.url, CosignatureVerifier.from_vkey(w.key)))
        except note.NoteError as e:
            raise ValueError(f"audit.witnesses: {w.url}: not a witness vkey: {e}") from None
    return out
