"""The HTTP verdict rule, once: what blockd does with a host (and path) on its HTTP side.

Pure (a snapshot in, a typed outcome out); used by the URL proxy, the HTTPS front, the admin
API's check and `blockd check`, so the four cannot disagree. The rule, in order:

1. the authority parses as `host[:port]` (IPv6 in brackets, no userinfo), else bad-request
2. the host or a parent is wholly blocked: notice, whatever the path or port
3. the host does not carry URL-level entries (not routed): misdirected (not an open proxy)
4. the path (when there is one: not for a TLS SNI or a bare host in a check), in any form a
   common origin may read it as, is listed: notice, whatever the port
5. a port is named that the caller does not serve: misdirected (the Host port never
   chooses where blockd connects)
6. pass, with the route verdict
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from blockd.policy.snapshot import PolicySnapshot
from blockd.policy.verdict import Verdict
from blockd.urls import InvalidName, InvalidURL, canonical_host, canonicalize

Outcome = Literal["notice", "pass", "misdirected", "bad-request"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request, and why.

    `verdict` is the matched entry for notice, the route for pass, None otherwise; `host`
    and `port` are the parsed authority (None for bad-request); `reason` says which rule
    decided misdirected ("host" or "port") or bad-request (what did not parse).
    """

    outcome: Outcome
    verdict: Verdict | None = None
    host: str | None = None
    port: int | None = None
    reason: str = ""


def decide(
    snapshot: PolicySnapshot,
    authority: str,
    path: str | None,
    ports: Callable[[str], Collection[int | None]] | None = None,
) -> Decision:
    """Decide `authority` (host[:port]) and origin-form `path` (None: host only).

    `ports(host)` gives the ports a request for a routed host may name (None: any); naming
    another is misdirected.
    """
    try:
        host, port = split_host(authority)
    except (InvalidName, UnicodeError) as e:
        return Decision("bad-request", reason=str(e) or type(e).__name__)
    verdict, routed = snapshot.host_route(host)
    if verdict is None:
        return Decision("misdirected", None, host, port, "host")
    if verdict.action != "route":
        return Decision("notice", verdict, host, port)
    if path is not None:
        try:
            listed = url_verdict(snapshot, host, path, routed)
        except (InvalidURL, UnicodeError) as e:
            return Decision("bad-request", None, host, port, str(e) or type(e).__name__)
        if listed is not None:
            return Decision("notice", listed, host, port)
    if port is not None and ports is not None and port not in ports(host):
        return Decision("misdirected", None, host, port, "port")
    return Decision("pass", verdict, host, port)


def check(snapshot: PolicySnapshot, target: str) -> dict[str, object]:
    """Decide an operator's check target (a host, `host:port`, or a URL); return its report.

    A target with '/' or '://' is a URL, decided with its path (a routed host's unlisted URL
    is not blocked); anything else is an authority, decided as a host (a routed host reports
    its route). Ports are not restricted: a check asks about names. The report, shared by
    the admin API and `blockd check`: {"target", "outcome", "canonical", "verdict"} with
    verdict null when nothing blocks or routes it, or {"target", "outcome", "error"}.
    """
    text = target.strip()
    path: str | None = None
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() not in ("http", "https"):
            return _report(target, Decision("bad-request", reason="scheme is not http(s)"))
    if "://" in target or "/" in text:
        cut = min((i for i in (text.find("/"), text.find("?")) if i >= 0), default=len(text))
        text, path = text[:cut], "/" + text[cut:].removeprefix("/")
    decision = decide(snapshot, text, path)
    if path is not None and decision.outcome == "pass":
        decision = Decision("pass", None, decision.host, decision.port)  # nothing matched
    canonical = decision.host
    if path is not None and decision.host is not None:
        try:
            canonical = canonicalize(f"http://{text}{path}")
        except (InvalidURL, UnicodeError):
            canonical = f"{decision.host}{path}"
    return _report(target, decision, canonical)


def _report(target: str, d: Decision, canonical: str | None = None) -> dict[str, object]:
    if d.outcome == "bad-request":
        return {"target": target, "outcome": d.outcome, "error": d.reason}
    v = d.verdict
    return {
        "target": target,
        "outcome": d.outcome,
        "canonical": canonical,
        "verdict": None
        if v is None
        else {
            "action": v.action,
            "authority": v.authority,
            "list": v.list,
            "version": v.version,
            "reference": v.entry_ref,
        },
    }


def split_host(authority: str) -> tuple[str, int | None]:
    """Split 'host[:port]' (IPv6 in brackets) into a canonical host and port; raise InvalidName."""
    host, port = authority, None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidName("unclosed IPv6 bracket")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InvalidName("junk after IPv6 address")
            port = _port(rest[1:])
    elif ":" in authority:
        host, _, text = authority.rpartition(":")
        port = _port(text)
    if "@" in host:
        raise InvalidName("user information in authority")
    return canonical_host(host), port


def _port(text: str) -> int | None:
    if text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        raise InvalidName(f"bad port {text[:8]!r}")
    return int(text)


def url_verdict(
    snapshot: PolicySnapshot, host: str, path: str, routed: tuple[str, ...] | None = None
) -> Verdict | None:
    """Decide a path on a routed host by every form a common origin could serve it as.

    The target is forwarded as received; it is checked as received and, where origins
    differ, as they may read it: without `;parameters` in path segments (Tomcat, Jetty,
    Spring) and without trailing dots or slashes (IIS, Windows file servers). `routed` is
    what snapshot.host_route(host) found, when the caller has it (no second walk).
    """
    walked = None if routed is None else (host, routed)
    path_part, mark, query = path.partition("?")
    forms = {path_part}
    if ";" in path_part:
        forms.add("/".join(seg.partition(";")[0] for seg in path_part.split("/")))
    for form in list(forms):
        trimmed = form.rstrip("./")
        if trimmed and trimmed != form:
            forms.add(trimmed)
    for form in (path_part, *sorted(forms - {path_part})):
        verdict = snapshot.url_verdict(f"http://{host}{form}{mark}{query}", walked)
        if verdict is not None:
            return verdict
    return None
