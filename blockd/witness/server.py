"""The witness's HTTP service: `POST /add-checkpoint` (C2SP tlog-witness) over aiohttp.

Each log's check-and-persist runs under that log's lock, so two submissions cannot both pass
against the same held size and roll each other back (the race the spec describes). Every
refusal is a plain-text one-line reason with the spec's status; nothing a client sends can
raise out of a handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from blockd.audit import note
from blockd.audit.cosignature import Cosigner
from blockd.witness import protocol
from blockd.witness.state import WitnessState

log = logging.getLogger("blockd.witness")
SIZE_TYPE = "text/x.tlog.size"


class Witness:
    """Cosign checkpoints of the configured logs that extend what was cosigned before."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[note.Verifier]],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Witness logs (origin -> its keys) with cosigner, keeping state."""
        self.cosigner = cosigner
        self.logs = dict(logs)
        self.state = state
        self.clock = clock
        self._locks = {origin: asyncio.Lock() for origin in self.logs}

    async def add_checkpoint(self, body: bytes) -> web.Response:
        """Judge one submission and answer as the spec says."""
        try:
            sub = protocol.parse(body)
            keys = self.logs.get(sub.origin)
            if keys is None:
                raise protocol.Refused(404, f"unknown log {sub.origin[:100]!r}")
            async with self._locks[sub.origin]:
                held = await asyncio.to_thread(self.state.held, sub.origin)
                try:
                    cp, body_text = protocol.judge(sub, keys, held)
                except protocol.Refused as refused:
                    if refused.evidence:
                        path = await asyncio.to_thread(
                            self.state.keep_evidence,
                            refused.evidence,
                            held,
                            sub.note,
                            sub.old_size,
                            sub.proof,
                        )
                        log.error("%s: %s; evidence in %s", sub.origin, refused.message, path)
                    raise
                await asyncio.to_thread(self.state.hold, sub.origin, sub.note)
            line = self.cosigner.cosign(body_text, int(self.clock()))
            log.info("cosigned %s size %d", cp.origin, cp.size)
            return web.Response(text=line, content_type="text/plain")
        except protocol.Refused as r:
            if r.status == 409 and r.size is not None:
                return web.Response(status=409, text=f"{r.size}\n", content_type=SIZE_TYPE)
            return web.Response(status=r.status, text=r.message + "\n")

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="the body is too large\n")
        return await self.add_checkpoint(body)

    def app(self) -> web.Application:
        """Return the aiohttp application: one route, bounded bodies."""
        app = web.Application(client_max_size=protocol.MAX_BODY)
        app.router.add_post("/add-checkpoint", self._handle)
        return app


async def serve(witness: Witness, host: str, port: int) -> web.AppRunner:
    """Start serving on host:port; return the runner (cleanup() stops it)."""
    runner = web.AppRunner(witness.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
