"""HTTPS with mutual TLS over aiohttp.

Imported only when the cloud component starts (aiohttp costs ~0.4 s of imports; start-up to READY
must stay well under that), and then in a worker thread so the event loop keeps serving.

- The client certificate/key and the CA bundle come from config; without a CA bundle the system
  trust store is used.  Hostnames (or IP SANs) are checked.
- No redirect is followed here: the client remembers permanent ones itself.
- Every request has a deadline (the whole exchange, connect to last byte).
- Answers are read whole, however the server cut them into writes and TLS records, up to
  ``protocol.MAX_BODY_BYTES`` (1 MiB): a larger ``Content-Length`` is refused before the body is
  read, and a body that streams past the cap is refused when it does (``TooLarge``, a protocol
  error, never half a document handed to a JSON parser).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp

from .protocol import MAX_BODY_BYTES, TlsUntrusted, TooLarge, Unreachable
from .transport import HttpResponse

# Connections kept open to the backend; the daemon sends one request at a time.
POOL_LIMIT = 2


def make_ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class AiohttpTransport:
    def __init__(self, ssl_context: ssl.SSLContext, user_agent: str) -> None:
        self._ssl = ssl_context
        self._ua = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=POOL_LIMIT, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self._ua},
                                                  auto_decompress=True, trust_env=False)
        return self._session

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   timeout: float) -> HttpResponse:
        session = self._get_session()
        try:
            async with asyncio.timeout(timeout):
                async with session.request(method, url, headers=dict(headers), data=body, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    data = await read_capped(resp, MAX_BODY_BYTES)
                    hdrs = {k.lower(): v for k, v in reversed(list(resp.headers.items()))}
                    return HttpResponse(resp.status, hdrs, data, str(resp.url))
        except TimeoutError:
            raise Unreachable(f"no answer within {timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TlsUntrusted(f"TLS: server certificate not trusted ({_short(exc.certificate_error)})") from None
        except aiohttp.ClientConnectorSSLError as exc:
            raise TlsUntrusted(f"TLS handshake failed ({_short(exc)})") from None
        except aiohttp.ClientSSLError as exc:
            raise TlsUntrusted(f"TLS failed ({_short(exc)})") from None
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot connect ({_short(exc.os_error)})") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Unreachable(f"connection failed ({type(exc).__name__}: {_short(exc)})") from None
        except ValueError as exc:  # an endpoint URL aiohttp cannot use (from a discovery document)
            raise Unreachable(f"unusable URL ({_short(exc)})") from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, or :class:`TooLarge` once it is known to exceed ``cap`` bytes."""
    declared = resp.content_length
    if declared is not None and declared > cap:
        resp.close()  # do not drain a body we will not read: drop the connection
        raise TooLarge(f"answer too large: Content-Length {declared} > {cap} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > cap:
            resp.close()
            raise TooLarge(f"answer too large: more than {cap} bytes")
    return bytes(buf)


def _short(exc: object) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:160]
