"""The admin listener: health, readiness, metrics, a status page, and the operator API.

Open (loopback by default): `/healthz`, `/readyz`, `/metrics` (unless `public_metrics` is
off) and `/status`, a read-only page for engineers and visiting regulators. Everything under
`/api/v1/` needs `Authorization: Bearer <token>` (the token file's content), compared in
constant time; repeated failures from anywhere are slowed down. State-changing calls and URL
checks (an oracle for the lists) are audited as operator actions. The API is described by
`/api/v1/openapi.json`.

The same API is served on the control socket (blockd.control): a Unix socket, mode 0600,
where the file's permissions are the access control and no token is asked. `blockd sync`,
`approve`, `rollback`, `reload`, `selftest`, `status` and `check` use it, so an operator's
command acts on the running daemon, and its answer is what the daemon now enforces.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from blockd import __version__, control
from blockd.audit import bundle, note
from blockd.audit.entries import utc
from blockd.audit.log import AuditError
from blockd.config import AdminConfig, binding, split_endpoint
from blockd.events import Event, EventBus, OperatorAction, SelfTestResult
from blockd.feeds.lines import KINDS, line
from blockd.health import Readiness as Readiness  # re-exported: callers import it from here
from blockd.http import decide

if TYPE_CHECKING:
    from blockd.audit.recorder import AuditRecorder
    from blockd.audit.witnessing import Witnessing
    from blockd.feeds.store import ListStatus
    from blockd.feeds.sync import FeedSync
    from blockd.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAILURE_WINDOW = 60.0  # seconds over which failed authentications are counted
FAILURE_LIMIT = 10  # failures in the window before every attempt is slowed
PENALTY = 1.0  # seconds each attempt waits while over the limit
EXPORT_COSIGN_WAIT = 15.0  # seconds an export waits for the witnesses to cosign


class Operated(Protocol):
    """What the admin API needs of the daemon it serves (blockd.app.App is one)."""

    bus: EventBus
    feeds: FeedSync
    audit: AuditRecorder | None
    witnessing: Witnessing | None
    metrics: Metrics

    def readiness(self) -> Readiness:
        """Say whether a current policy is enforced."""
        ...

    async def run_selftest(self) -> SelfTestResult:
        """Run the self-tests now."""
        ...

    def config_digest(self) -> str:
        """Return the SHA-256 of the configuration in force."""
        ...

    def listeners(self) -> list[tuple[str, str, int]]:
        """Return every bound listener as (kind, address, port)."""
        ...

    async def reload(self) -> str:
        """Re-read the configuration file; say what happened."""
        ...

    def fleet_view(self) -> dict[str, Any] | None:
        """Return this node and the fleet as it last read it; None outside a fleet."""
        ...


class Admin:
    """The admin HTTP server of one daemon."""

    def __init__(
        self,
        app: Operated,
        cfg: AdminConfig,
        *,
        control_socket: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Prepare; nothing listens until start(). clock and sleep pace guessing (tests)."""
        self.app = app
        self.cfg = cfg
        self.control_socket = control_socket
        self.control: control.Listener | None = None
        self._clock = clock
        self._sleep = sleep
        self._failures: list[float] = []
        self.runner: web.AppRunner | None = None
        self.bound: list[tuple[str, int]] = []
        web_app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        r = web_app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/status", self.status_page)
        r.add_get("/", self.status_page)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_get("/api/v1/lists", self.lists)
        r.add_get("/api/v1/status", self.status)
        r.add_get("/api/v1/checkpoint", self.checkpoint)
        r.add_get("/api/v1/audit/export", self.export)
        r.add_get("/api/v1/fleet", self.fleet)
        r.add_post("/api/v1/sync", self.sync)
        r.add_post("/api/v1/lists/{authority}/{list}/approve", self.approve)
        r.add_post("/api/v1/lists/{authority}/{list}/rollback", self.rollback)
        r.add_post("/api/v1/check", self.check)
        r.add_post("/api/v1/selftest", self.selftest)
        r.add_post("/api/v1/reload", self.reload)
        self.web_app = web_app

    def _token(self) -> str | None:
        if self.cfg.token_file is None:
            return None
        try:
            token = Path(self.cfg.token_file).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return token or None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        open_paths = {"/healthz", "/readyz", "/status", "/", "/api/v1/openapi.json"}
        if path in open_paths or (path == "/metrics" and self.cfg.public_metrics):
            return await handler(request)
        if _over_control_socket(request):
            return await handler(request)  # the socket file's permissions let the caller in
        token = self._token()
        if token is None:
            return _problem(403, "the operator API is off: set admin.token_file")
        now = self._clock()
        self._failures = [t for t in self._failures if now - t < FAILURE_WINDOW]
        if len(self._failures) >= FAILURE_LIMIT:
            await self._sleep(PENALTY)  # slow down guessing, for everyone, while it lasts
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self._failures.append(now)
            return _problem(401, "a valid bearer token is required", bearer=True)
        return await handler(request)

    async def start(self) -> None:
        """Listen on every configured admin endpoint."""
        self.runner = web.AppRunner(self.web_app, access_log=None)
        await self.runner.setup()
        for endpoint in self.cfg.listen:
            host, port = split_endpoint(endpoint)
            site = web.TCPSite(self.runner, host, port)
            with binding("admin", host, port):
                await site.start()
            server = site._server
            assert server is not None
            for sock in server.sockets:  # type: ignore[attr-defined]
                self.bound.append((host, sock.getsockname()[1]))
        if self.control_socket is not None:
            self.control = control.Listener(self.control_socket)
            await web.SockSite(self.runner, self.control.sock).start()

    async def stop(self) -> None:
        """Stop listening; remove the control socket."""
        if self.runner is not None:
            await self.runner.cleanup()
        if self.control is not None:
            self.control.close()

    # -- open endpoints ------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """Answer while the process is alive."""
        return web.json_response({"status": "alive", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        """Answer 200 when a current policy is enforced, 503 saying why not; detail in checks."""
        r = self.app.readiness()
        body = {"ready": r.ready, "reason": r.reason, "checks": r.checks}
        return web.json_response(body, status=200 if r.ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        """Serve the Prometheus exposition."""
        body, content_type = self.app.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def status_page(self, request: web.Request) -> web.Response:
        """Serve the read-only status page (HTML, no scripts)."""
        return web.Response(
            text=render_status(self.app),
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "Cache-Control": "no-store",
            },
        )

    async def openapi(self, request: web.Request) -> web.Response:
        """Serve the API description."""
        return web.json_response(OPENAPI)

    # -- the operator API ----------------------------------------------------------------------

    async def lists(self, request: web.Request) -> web.Response:
        """Return the status of every configured list."""
        return web.json_response({"lists": list_status(self.app)})

    async def checkpoint(self, request: web.Request) -> web.Response:
        """Return the latest signed checkpoint of the audit log."""
        if self.app.audit is None:
            return _problem(404, "the audit log is off")
        notes = await asyncio.to_thread(self.app.audit.log.checkpoints)
        if not notes:
            return _problem(404, "no checkpoint signed yet")
        return web.Response(text=notes[-1], content_type="text/plain")

    async def fleet(self, request: web.Request) -> web.Response:
        """Return this node, Redis, and every node of the fleet as this node last read them."""
        view = self.app.fleet_view()
        if view is None:
            return _problem(404, "not in a fleet: this blockd has no [fleet] section")
        return web.json_response(view)

    async def export(self, request: web.Request) -> web.Response:
        """Sign a checkpoint and return a bundle; ?from= and ?to= (UTC) select entries."""
        if self.app.audit is None:
            return _problem(404, "the audit log is off")
        log = self.app.audit.log
        start, end = request.query.get("from"), request.query.get("to")
        previous = None
        if "previous" in request.query:  # a checkpoint the regulator holds: prove growth
            try:
                text, _ = note.open_note(request.query["previous"], [log.signer.verifier])
                previous = note.Checkpoint.parse(text)
            except ValueError as e:
                return _problem(400, f"previous: not a checkpoint of this log: {e}")

        def build() -> dict[str, object]:
            begin, stop = log.index_range(start, end) if (start or end) else (0, log.head().size)
            witnessing = self.app.witnessing
            witnesses = len(witnessing.states) if witnessing is not None else 0
            return bundle.export(log, begin, stop, previous=previous, witnessed=witnesses)

        self._audit("export", f"from {start or 'start'} to {end or 'now'}", request)
        try:
            await asyncio.to_thread(log.sign_checkpoint, utc(time.time()))
            await self._cosign()
            data = await asyncio.to_thread(build)
        except (ValueError, AuditError) as e:
            return _problem(409, str(e))
        return web.Response(text=bundle.dumps(data), content_type="application/json")

    async def _cosign(self) -> None:
        """Give the witnesses a short while to cosign the checkpoint just signed."""
        witnessing = self.app.witnessing
        if witnessing is None:
            return
        try:
            async with asyncio.timeout(EXPORT_COSIGN_WAIT):
                await witnessing.cosign()
        except TimeoutError:
            pass  # the bundle names no cosignature from a slow witness; verify says so

    def _audit(self, action: str, detail: str, request: web.Request | None = None) -> None:
        if request is not None:
            detail = f"{detail} ({_channel(request)})"
        self.app.bus.publish(OperatorAction(action, detail, self.app.config_digest()))

    def _answer(self, **fields: object) -> web.Response:
        """Answer with fields and what the daemon enforces now."""
        return web.json_response({**fields, **enforced(self.app)})

    async def status(self, request: web.Request) -> web.Response:
        """Return what the daemon enforces, readiness, and every list's status."""
        return self._answer()

    async def sync(self, request: web.Request) -> web.Response:
        """Sync lists now: every list, or body {"lists": ["authority/list", ...]}."""
        body = await _json(request) if request.can_read_body else {}
        wanted = body.get("lists", []) if isinstance(body, dict) else None
        if not (isinstance(wanted, list) and all(isinstance(w, str) for w in wanted)):
            return _problem(400, 'give {"lists": ["authority/list", ...]} or no body')
        configured = {c.ref: c for c in self.app.feeds.config.lists}
        unknown = sorted(set(wanted) - set(configured))
        if unknown:
            return _problem(404, f"no configured list {', '.join(unknown)}")
        self._audit("sync", " ".join(wanted) or "all", request)
        said: list[str] = []

        def hear(event: Event) -> None:
            if (text := line(event)) is not None:
                said.append(text)

        feeds, bus = self.app.feeds, self.app.bus
        for kind in KINDS:
            bus.subscribe(kind, hear)
        try:
            await feeds.sync_trust()
            chosen = [configured[w] for w in wanted] or list(configured.values())
            outcomes = {c.ref: await feeds.sync_list(c, refresh_trust=False) for c in chosen}
        finally:
            for kind in KINDS:
                bus.unsubscribe(kind, hear)
        return self._answer(outcomes=outcomes, said=said)

    async def approve(self, request: web.Request) -> web.Response:
        """Apply a quarantined version: body {"version": N}."""
        ref = f"{request.match_info['authority']}/{request.match_info['list']}"
        body = await _json(request)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool):
            return _problem(400, 'give {"version": N}')
        self._audit("approve", f"{ref} v{version}", request)
        try:
            await self.app.feeds.approve(ref, version)
        except (KeyError, ValueError) as e:
            return _problem(409, _message(e))
        return self._answer(approved=ref, version=version)

    async def rollback(self, request: web.Request) -> web.Response:
        """Return a list to its previous version."""
        ref = f"{request.match_info['authority']}/{request.match_info['list']}"
        self._audit("rollback", ref, request)
        try:
            version = await self.app.feeds.rollback(ref)
        except (KeyError, ValueError) as e:
            return _problem(409, _message(e))
        return self._answer(rolled_back=ref, version=version)

    async def check(self, request: web.Request) -> web.Response:
        """Decide hosts or URLs against the enforced policy (audited: it is an oracle)."""
        body = await _json(request)
        targets = body.get("targets") if isinstance(body, dict) else None
        if not (isinstance(targets, list) and 0 < len(targets) <= 100):
            return _problem(400, 'give {"targets": [host or URL, ...]} (at most 100)')
        self._audit("check", f"{len(targets)} targets", request)
        if not all(isinstance(target, str) for target in targets):
            return _problem(400, "targets must be strings")
        snapshot = self.app.feeds.snapshot
        out = [decide.check(snapshot, target) for target in targets]
        return web.json_response({"results": out})

    async def selftest(self, request: web.Request) -> web.Response:
        """Run the self-tests now."""
        self._audit("selftest", "on request", request)
        result = await self.app.run_selftest()
        return self._answer(
            passed=result.passed, checks=result.checks, failures=list(result.failures)
        )

    async def reload(self, request: web.Request) -> web.Response:
        """Re-read the configuration file, as SIGHUP does; a bad file is refused and kept."""
        result = await self.app.reload()
        return self._answer(reloaded=result == "reloaded", result=result)


def _over_control_socket(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family == socket.AF_UNIX


def _channel(request: web.Request) -> str:
    """Say which way an operator's call came, for the audit log (never a network address)."""
    if _over_control_socket(request):
        assert request.transport is not None
        uid = control.peer_uid(request.transport.get_extra_info("socket"))
        return f"control socket, uid {uid}" if uid is not None else "control socket"
    return "admin API"


def _message(e: Exception) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def enforced(app: Operated) -> dict[str, object]:
    """Return what the daemon enforces now: generation, versions, readiness, list status."""
    snapshot = app.feeds.snapshot
    r = app.readiness()
    return {
        "generation": snapshot.generation,
        "enforcing": dict(snapshot.versions),
        "ready": r.ready,
        "reason": r.reason,
        "lists": list_status(app),
    }


def _problem(status: int, detail: str, *, bearer: bool = False) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="blockd"'} if bearer else {}
    return web.json_response(
        {"status": status, "detail": detail},
        status=status,
        headers=headers,
        content_type="application/problem+json",
    )


async def _json(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # RecursionError: nested too deeply (a 64 KB body nests 32,000 deep)


def _when(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, float | int):
        ts = datetime.fromtimestamp(ts, UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_status(app: Operated) -> list[dict[str, Any]]:
    """Return every configured list's status as JSON-ready dicts."""
    return list_rows(app.feeds.status(), datetime.now(UTC))


def list_rows(statuses: list[ListStatus], now: datetime) -> list[dict[str, Any]]:
    """Return list statuses as the JSON the API and `blockd status --json` give."""
    return [
        {
            "list": st.ref,
            "version": st.version,
            "entries": st.entries,
            "issued_at": _when(st.issued_at),
            "expires": _when(st.expires),
            "fresh": st.fresh(now),
            "last_success": _when(st.state.last_success),
            "last_attempt": _when(st.state.last_attempt),
            "last_error": st.state.last_error_reason,
            "last_error_message": st.state.last_error,
            "quarantined": st.state.quarantined,
            "held_at_or_below": st.state.held_at_or_below,
        }
        for st in statuses
    ]


def render_status(app: Operated, now: datetime | None = None) -> str:
    """Return the status page: readiness, lists, trust, upstreams, audit, workers, fleet, listeners.

    Every value is HTML-escaped (list names, reasons, a checkpoint note are not ours to
    trust); the page has no scripts.
    """
    now = now or datetime.now(UTC)
    r = app.readiness()
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_text(v)}</td>"
            for v in (
                s["list"],
                s["version"],
                s["entries"],
                s["expires"],
                s["last_success"],
                s["last_error"],
                s["quarantined"],
            )
        )
        + "</tr>"
        for s in list_status(app)
    )
    listeners = "".join(
        f"<li>{html.escape(f'{kind} {host}:{port}')}</li>" for kind, host, port in app.listeners()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>blockd status</title>
<style>body{{font-family:sans-serif;margin:1rem;max-width:70rem;color:#111}}
table{{border-collapse:collapse}}th,td{{border:1px solid #888;padding:.3rem .5rem;text-align:left}}
pre{{white-space:pre-wrap;background:#f4f4f4;padding:.5rem}}.bad{{color:#a00}}</style></head>
<body><main><h1>blockd {html.escape(__version__)}</h1>
<p class="{"" if r.ready else "bad"}"><strong>{"Ready" if r.ready else "NOT READY"}</strong>:
{html.escape(r.reason)}</p>
<h2>Lists</h2><table><thead><tr><th scope="col">list</th><th scope="col">version</th>
<th scope="col">entries</th><th scope="col">expires</th><th scope="col">last sync</th>
<th scope="col">last error</th><th scope="col">quarantined</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Trust policy</h2>{_trust_section(r.checks.get("trust", {}), now)}
<h2>Upstream resolvers</h2>{_upstreams_section(r.checks.get("upstreams", {}))}
<h2>Audit checkpoint</h2>{_checkpoint_section(app, now)}
{_workers_section(r.checks.get("workers"))}
{_fleet_section(app.fleet_view())}
<h2>Listeners</h2><ul>{listeners}</ul>
</main></body></html>
"""


def _text(v: object) -> str:
    return html.escape(str(v)) if v is not None else "—"


def _ago(then: datetime, now: datetime) -> str:
    """Say how long ago (or, negative, how far ahead) then is, in words."""
    seconds = (now - then).total_seconds()
    ahead, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            words = f"{n} {unit}{'s' if n != 1 else ''}"
            break
    else:
        words = "less than a minute"
    return f"in {words}" if ahead else f"{words} ago"


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _trust_section(check: Mapping[str, Any], now: datetime) -> str:
    version, expires = check.get("version"), _parse_time(check.get("expires"))
    if version is None or expires is None:
        return '<p class="bad">No trust policy loaded.</p>'
    state = "expired" if expires <= now else "expires"
    bad = "" if check.get("ok") else ' class="bad"'
    return (
        f"<p{bad}>Version {_text(version)}; "
        f"{state} {_text(check.get('expires'))} ({html.escape(_ago(expires, now))}).</p>"
    )


def _upstreams_section(check: Mapping[str, Any]) -> str:
    upstreams: Mapping[str, Mapping[str, Any]] = check.get("upstreams", {})
    if not upstreams:
        return '<p class="bad">None configured: names not on a list get SERVFAIL.</p>'
    items = []
    for name, u in upstreams.items():
        if u.get("healthy"):
            items.append(f"<li>{_text(name)}: answering</li>")
        else:
            since = f" since {_text(u.get('down_since'))}" if u.get("down_since") else ""
            items.append(
                f'<li class="bad">{_text(name)}: DOWN ({_text(u.get("reason"))}){since}</li>'
            )
    needed = "" if check.get("required") else " (readiness does not depend on them)"
    return f"<ul>{''.join(items)}</ul><p>{len(upstreams)} configured{needed}.</p>"


def _workers_section(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return ""  # one process answers
    rows = []
    for w in check.get("workers", []):
        bad = "" if w.get("state") == "serving" else ' class="bad"'
        cells = (w.get(k) for k in ("worker", "state", "pid", "restarts", "policy_generation"))
        rows.append(f"<tr{bad}>{''.join(f'<td>{_text(c)}</td>' for c in cells)}</tr>")
    problem = check.get("problem")
    said = f'<p class="bad">{_text(problem)}</p>' if problem else ""
    head = "".join(
        f'<th scope="col">{h}</th>' for h in ("worker", "state", "pid", "restarts", "policy")
    )
    return (
        f"<h2>Workers</h2><p>{_text(check.get('serving'))} of {_text(check.get('configured'))}"
        f" answering.</p>{said}<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _fleet_section(view: Mapping[str, Any] | None) -> str:
    """Return the Fleet table: every node as this node last read Redis, flags marked bad."""
    if view is None:
        return ""  # this blockd runs alone
    redis = (
        "Redis up"
        if view.get("redis") == "up"
        else f'<span class="bad">Redis DOWN ({_text(view.get("problem"))})</span>'
    )
    role = " (the syncer)" if view.get("syncer") else ""
    read = view.get("read_at")
    summary = (
        f"{len(view.get('nodes', []))} node(s), {_text(view.get('live'))} live, "
        f"{_text(view.get('divergent'))} divergent, as read {_text(read)}"
        if read
        else "Not read from Redis yet"
    )
    rows = []
    for n in view.get("nodes", []):
        flags = [
            f for f, on in (("STALE", n.get("stale")), ("DIVERGENT", n.get("divergent"))) if on
        ]
        versions = ", ".join(
            f"{ref} {'none' if v is None else f'v{v}'}"
            for ref, v in sorted((n.get("versions") or {}).items())
        )
        age = n.get("heartbeat_age")
        cells = (
            n.get("node"),
            "syncer" if n.get("syncer") else "follower",
            f"{age:.0f} s ago" if isinstance(age, int | float) else None,
            n.get("policy_generation"),
            versions or None,
            " ".join(flags) or "ok",
        )
        bad = ' class="bad"' if flags else ""
        rows.append(f"<tr{bad}>{''.join(f'<td>{_text(c)}</td>' for c in cells)}</tr>")
    skipped = "".join(
        f'<li class="bad">{_text(s.get("node"))}: {_text(s.get("reason"))}</li>'
        for s in view.get("skipped", [])
    )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("node", "role", "heartbeat", "policy", "versions", "state")
    )
    return (
        f"<h2>Fleet</h2><p>This node: <strong>{_text(view.get('node'))}</strong>{role}; "
        f"{redis}. {summary}.</p><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + (f"<p>Heartbeats skipped as malformed:</p><ul>{skipped}</ul>" if skipped else "")
    )


def _checkpoint_section(app: Operated, now: datetime) -> str:
    if app.audit is None:
        return "<p>The audit log is off.</p>"
    signed = app.audit.log.latest_checkpoint()
    if signed is None:
        return "<p>No checkpoint signed yet.</p>"
    raw = f"<pre>{html.escape(signed)}</pre>"
    try:
        text, _ = note.open_note(signed, [app.audit.log.signer.verifier])
        cp = note.Checkpoint.parse(text)
    except note.NoteError as e:
        why = html.escape(str(e))
        return f'<p class="bad">The latest checkpoint does not verify: {why}</p>{raw}'
    stamp = next((x.removeprefix("time ") for x in cp.extensions if x.startswith("time ")), None)
    when = _parse_time(stamp)
    signed_at = (
        f"signed {html.escape(stamp or '')} ({html.escape(_ago(when, now))})"
        if when is not None
        else "signing time not recorded"
    )
    return (
        f"<p>Log <strong>{html.escape(cp.origin)}</strong>: {cp.size:,} entries, "
        f"{signed_at}.</p>{raw}"
    )


OPENAPI: dict[str, Any] = json.loads((Path(__file__).parent / "admin.openapi.json").read_text())
