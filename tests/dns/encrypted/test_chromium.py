"""A real browser resolves through blockd's DNS over HTTPS and lands on the notice page.

Headless Chromium (Debian's, installed by tools/ensure-deb when missing; if it cannot be
installed the test fails, as the other browser tests do) is given secure DNS in its profile's
`Local State`: `dns_over_https.mode = "secure"` (DoH only, never the system resolver) and
`dns_over_https.templates` pointing at blockd's DoH listener, the prefs that the
DnsOverHttpsMode and DnsOverHttpsTemplates policies set. It trusts the demo certificate by its
key alone (--ignore-certificate-errors-spki-list). Everything stays on loopback: blockd
forwards what it does not block to the test's upstream on 127.0.0.1, never to resolv.conf.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blockd.app import App
from tests.daemon import ROOT, demo_config, port, running
from tests.http.cdp import QUIET

if TYPE_CHECKING:
    from tests.dnsupstream import Upstream

pytestmark = pytest.mark.slow

ENCRYPTED = {"dot_listen": ["127.0.0.1:0"], "doh_listen": ["127.0.0.1:0"]}
TITLE = "<title>This page is blocked</title>"  # the demo notice page, in English


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    """Install Debian's chromium if missing; return its path."""
    done = subprocess.run(
        [str(ROOT / "tools/ensure-deb"), "chromium:chromium"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(f"tools/ensure-deb chromium failed ({done.returncode}):\n{done.stderr}")
    return "chromium"


@pytest_asyncio.fixture
async def app(tmp_path: Path, upstream: Upstream) -> AsyncIterator[App]:
    text = demo_config(tmp_path, upstream.addr, encrypted=ENCRYPTED)
    async with running(text, tmp_path, write=True) as a:
        yield a


def spki_hash(certificate: Path) -> str:
    """Return base64(SHA-256(SubjectPublicKeyInfo)), as Chromium's SPKI allow-list takes it."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def dump_dom(binary: str, profile: Path, url: str, *flags: str) -> str:
    """Load url in headless Chromium on profile; return the DOM it ends with."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--headless=new",
        *QUIET,
        # No https:// first attempt for an http:// URL: what is tested is DNS, then HTTP.
        "--disable-features=HttpsUpgrades,Translate,OptimizationHints,MediaRouter",
        f"--user-data-dir={profile}",
        *flags,
        "--dump-dom",
        url,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode()


def doh_count(app: App, result: str) -> float:
    """Return blockd_dns_queries_total for result over DoH."""
    line = f'blockd_dns_queries_total{{result="{result}",transport="doh"}} '
    text = app.metrics.render()[0].decode()
    return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])


async def test_chromium_in_secure_doh_mode_reaches_the_notice_page(
    app: App, chromium_binary: str, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    template = f"https://127.0.0.1:{port(app, 'doh')}/dns-query{{?dns}}"
    (profile / "Local State").write_text(
        json.dumps({"dns_over_https": {"mode": "secure", "templates": template}})
    )
    cert = app.config.dns.encrypted.certificate
    assert cert is not None
    dom = await dump_dom(
        chromium_binary,
        profile,
        f"http://blocked.demo.test:{port(app, 'http')}/",
        f"--ignore-certificate-errors-spki-list={spki_hash(cert)}",
    )
    assert TITLE in dom
    # The name was resolved by blockd over DoH (blocked.demo.test exists nowhere else), and
    # nothing went to port 53: secure mode has no fallback.
    assert doh_count(app, "blocked") >= 1
    text = app.metrics.render()[0].decode()
    assert not [
        x
        for x in text.splitlines()
        if x.startswith("blockd_dns_queries_total{")
        and ('transport="udp"' in x or 'transport="tcp"' in x)
        and not x.endswith(" 0.0")
    ]


async def test_chromium_in_secure_mode_refuses_an_untrusted_doh_certificate(
    app: App, chromium_binary: str, tmp_path: Path
) -> None:
    """The same without trusting the demo certificate: no answer, so no notice page (what
    shows that the page above came through DoH, and that the certificate is checked)."""
    profile = tmp_path / "profile"
    profile.mkdir()
    template = f"https://127.0.0.1:{port(app, 'doh')}/dns-query{{?dns}}"
    (profile / "Local State").write_text(
        json.dumps({"dns_over_https": {"mode": "secure", "templates": template}})
    )
    dom = await dump_dom(chromium_binary, profile, f"http://blocked.demo.test:{port(app, 'http')}/")
    assert TITLE not in dom
    assert doh_count(app, "blocked") == 0
