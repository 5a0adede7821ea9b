"""Several masters behind one client: an ordered list of endpoints and fail-over between them.

Masters that share one PostgreSQL catalog are interchangeable for a worker or the manager: any of
them leases, records and answers from the same rows. A node configured with all their URLs
(``MasterEndpoint`` = ``https://m1:8391,https://m2:8391``) sends each request to the master it last
reached, and on a connection failure tries the others in the configured order. It stays on the one
that answered (no fail-back), so a flapping master does not bounce the whole fleet between masters.

Only failures that say nothing reached a master switch: a refused or reset connection, a timeout, a
failed handshake. An answer from a master, even an error (:class:`ApiError`) or a body that is not
JSON (:class:`ProtocolError`), is that master's word and is raised as it is.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from packfleet.config import split_endpoints
from packfleet.errors import ApiError, ProtocolError, SettingsError, TlsError, TransportError
from packfleet.transport._client import MasterClient, parse_endpoint

log = logging.getLogger("packfleet.transport")

_ALL_DOWN_FIX = "check that at least one master runs (packfleet master run) and that MasterEndpoint lists it"


class EndpointList:
    """The masters' URLs in configured order, and which one answered last.

    >>> urls = EndpointList(["https://m1:8391", "https://m2:8391"])
    >>> urls.succeeded("https://m2:8391")
    >>> urls.order()
    ['https://m2:8391', 'https://m1:8391']
    """

    def __init__(self, urls: Sequence[str]) -> None:
        cleaned = list(dict.fromkeys(url.strip().rstrip("/") for url in urls if url.strip()))
        if not cleaned:
            raise SettingsError(
                "no master URL given", fix="packfleet settings set worker MasterEndpoint https://MASTER:8391"
            )
        self.urls: tuple[str, ...] = tuple(cleaned)
        self._preferred = self.urls[0]

    @property
    def preferred(self) -> str:
        """The URL the next request goes to first: the last one that answered, else the first."""
        return self._preferred

    def order(self) -> list[str]:
        """The URLs to try, in turn: the preferred one, then the others in configured order."""
        return [self._preferred, *(url for url in self.urls if url != self._preferred)]

    def succeeded(self, url: str) -> None:
        """``url`` answered: it is tried first from now on."""
        if url not in self.urls:
            raise ValueError(f"{url} is not one of {', '.join(self.urls)}")
        self._preferred = url

    def all_failed(self, failures: Sequence[tuple[str, TransportError]]) -> TransportError:
        """The error for a request that no master took; it names every URL tried and why."""
        if len(failures) == 1:
            return failures[0][1]  # a single master: its own, more precise, explanation
        reasons = "; ".join(f"{url}: {error.message}" for url, error in failures)
        message = f"no master answered ({len(failures)} tried): {reasons}"
        if all(isinstance(error, TlsError) for _url, error in failures):
            # Every master refused the handshake: a certificate problem, not an outage. Keeping the
            # type lets callers that stop on TLS failures (a burst run, a renewal) still do so.
            return TlsError(message, fix=failures[0][1].fix or _ALL_DOWN_FIX)
        return TransportError(message, fix=_ALL_DOWN_FIX)


def switches_master(error: TransportError) -> bool:
    """Whether ``error`` means the master was not reached, so another one should be tried."""
    return not isinstance(error, ApiError | ProtocolError)


class FailoverClient(MasterClient):
    """A :class:`MasterClient` over several masters: one pool per master, fail-over on connection failure.

    It is a drop-in for a one-master client: ``endpoint``, ``host`` and ``port`` name the master in
    use, ``replace_context`` reaches every pool.

    >>> client = FailoverClient([URL1, URL2], ctx, role="worker", pins=[T])  # doctest: +SKIP
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        ssl_context: ssl.SSLContext,
        *,
        role: str,
        pins: list[str],
        own_thumbprint: str | None = None,
        timeout: float = 60.0,
        connections: int = 8,
    ) -> None:
        self.endpoints = EndpointList(endpoints)
        self._clients = {
            url: MasterClient(
                url,
                ssl_context,
                role=role,
                pins=pins,
                own_thumbprint=own_thumbprint,
                timeout=timeout,
                connections=connections,
            )
            for url in self.endpoints.urls
        }
        super().__init__(
            self.endpoints.preferred,
            ssl_context,
            role=role,
            pins=pins,
            own_thumbprint=own_thumbprint,
            timeout=timeout,
            connections=connections,
        )

    def serves(self, endpoint: str) -> bool:
        """Whether ``endpoint`` (a MasterEndpoint value) is this client's list of masters."""
        return _urls(endpoint) == self.endpoints.urls

    def replace_context(
        self, ssl_context: ssl.SSLContext, *, pins: list[str], own_thumbprint: str | None
    ) -> None:
        super().replace_context(ssl_context, pins=pins, own_thumbprint=own_thumbprint)
        for client in self._clients.values():
            client.replace_context(ssl_context, pins=pins, own_thumbprint=own_thumbprint)

    def trust_also(self, pem: str, *, pins: list[str]) -> None:
        super().trust_also(pem, pins=pins)  # the one context every master's client shares
        for client in self._clients.values():
            client.pins = pins

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        await super().close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        raw: bool = False,
    ) -> Any:
        """Send to the preferred master; on a connection failure, to the next; raise if none took it."""
        failures: list[tuple[str, TransportError]] = []
        for url in self.endpoints.order():
            try:
                result = await self._clients[url].request(
                    method, path, json_body=json_body, data=data, params=params, timeout=timeout, raw=raw
                )
            except TransportError as exc:
                if not switches_master(exc):
                    raise
                failures.append((url, exc))
                continue
            if url != self.endpoints.preferred or failures:
                log.warning(
                    "%s now talks to the master at %s (%s)",
                    self.role,
                    url,
                    "; ".join(f"{bad} failed: {error.message}" for bad, error in failures) or "recovered",
                )
            self._use(url)
            return result
        raise self.endpoints.all_failed(failures)

    def _use(self, url: str) -> None:
        self.endpoints.succeeded(url)
        self.endpoint = url
        self.host, self.port = parse_endpoint(url, kind=self.role)


def _urls(endpoint: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(split_endpoints(endpoint)))  # a URL listed twice is tried once


def connect_master(
    endpoint: str,
    ssl_context: ssl.SSLContext,
    *,
    role: str,
    pins: list[str],
    own_thumbprint: str | None = None,
    timeout: float = 60.0,
    connections: int = 8,
) -> MasterClient:
    """A client for a ``MasterEndpoint`` value: one URL gives a :class:`MasterClient`, several a
    :class:`FailoverClient` over them."""
    urls = _urls(endpoint)
    if len(urls) <= 1:
        return MasterClient(
            endpoint,
            ssl_context,
            role=role,
            pins=pins,
            own_thumbprint=own_thumbprint,
            timeout=timeout,
            connections=connections,
        )
    return FailoverClient(
        urls,
        ssl_context,
        role=role,
        pins=pins,
        own_thumbprint=own_thumbprint,
        timeout=timeout,
        connections=connections,
    )
