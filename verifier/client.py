"""Reading a C2SP tlog-tiles log: over HTTP(S) with ``urllib``, or from a local directory.

A tlog-tiles log (c2sp.org/tlog-tiles) is a tree of static files under one prefix::

    <prefix>/checkpoint                     the latest signed checkpoint (text)
    <prefix>/tile/<L>/<N>[.p/<W>]           hash tiles (32-byte hashes, concatenated)
    <prefix>/tile/entries/<N>[.p/<W>]       entry bundles (uint16-length-prefixed leaves)

so the same reader works for ``https://bucket.example/logs/gurukul`` and for a
directory holding a copy (a mirror, a backup, ``wget -r`` of the prefix). A
:class:`TileSource` fetches one resource by its path below the prefix; nothing
here checks what it fetched (that is :mod:`verifier.audit`'s job), but every
fetch is bounded in size and, over HTTP, in time.

Failures are typed so a tool can tell a misbehaving log from a broken network:

- :class:`~verifier.errors.ResourceNotFound`: HTTP 404, or no such file;
- :class:`~verifier.errors.FetchFailed`: another HTTP error status, a timeout, a
  truncated, over-long or undecodable answer (the log failed: exit 1);
- :class:`~verifier.errors.SourceUnavailable`: a bad URL, a refused connection, an
  unknown host, a missing directory, an unreadable file (exit 2).

>>> import pathlib, tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> _ = (pathlib.Path(tmp.name) / "checkpoint").write_text("example.com/log\\n0\\n...")
>>> source = open_source(tmp.name)
>>> source.fetch("checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)[:16]
b'example.com/log\\n'
>>> fetch_tile(source, TileID(0, 0, 3)).path  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
verifier.errors.ResourceNotFound: tile/0/000.p/3: not in the log directory ...
>>> tmp.cleanup()

Bucket logs also answer ``GET <prefix>/proof/consistency?old=M&new=N`` with JSON
``{"old": M, "new": N, "proof": [base64, ...]}``; :func:`fetch_consistency_proof`
reads it (HTTP sources only).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from verifier.errors import FetchFailed, ResourceNotFound, SourceUnavailable
from verifier.hashing import HASH_SIZE
from verifier.note import _b64decode_canonical
from verifier.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, TileID

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BUNDLE_BYTES",
    "MAX_CHECKPOINT_BYTES",
    "MAX_PROOF_RESPONSE_BYTES",
    "MAX_TILE_BYTES",
    "DirSource",
    "FetchedTile",
    "HTTPSource",
    "TileSource",
    "fetch_checkpoint",
    "fetch_consistency_proof",
    "fetch_tile",
    "open_source",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds an HTTP fetch may take, from connecting to the last byte."""

MAX_CHECKPOINT_BYTES = 1 << 20
"""Largest checkpoint read; one with 100 cosignatures is under 16 KiB."""

MAX_TILE_BYTES = HASH_SIZE * TILE_WIDTH
"""A full hash tile: 256 hashes of 32 bytes (C2SP tlog-tiles)."""

MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)
"""A full entry bundle of 256 entries of the largest size (C2SP tlog-tiles)."""

MAX_PROOF_RESPONSE_BYTES = 64 * 1024
"""Largest consistency-proof JSON read: 64 hashes take under 4 KiB."""

MAX_PROOF_HASHES = 64
"""Most hashes a consistency proof of trees below 2**64 leaves can have."""

_USER_AGENT = "tlog-verify (bucket verifier; +c2sp.org/tlog-tiles)"
_CHUNK = 64 * 1024


@runtime_checkable
class TileSource(Protocol):
    """Where a log's files come from. ``path`` is relative to the log prefix, like
    ``checkpoint`` or ``tile/0/x001/234.p/7``."""

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        """Return the bytes of ``path``, at most ``max_bytes`` of them.

        Raises ResourceNotFound if the log has no such resource, FetchFailed if the
        log answered badly or too slowly or with more than ``max_bytes`` bytes, and
        SourceUnavailable if the source cannot be reached at all.
        """
        ...

    def location(self, path: str) -> str:
        """Return the full URL or file name of ``path``, for messages."""
        ...


class DirSource:
    """A log laid out in a local directory exactly as under its HTTP prefix.

    Construction raises SourceUnavailable unless ``root`` is a directory.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = os.fspath(self.root)
        if not self.root.is_dir():
            raise SourceUnavailable(
                f"{self.root}: not a directory (a log source is an http(s):// URL "
                "or a directory laid out like one)",
                url=str(self.root),
            )

    def __repr__(self) -> str:
        return f"DirSource({str(self.root)!r})"

    def location(self, path: str) -> str:
        """Return the file that holds ``path``."""
        return str(self.root.joinpath(*path.split("/")))

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        """Return the contents of the file for ``path`` (see :class:`TileSource`)."""
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts) or "?" in path:
            raise ResourceNotFound(f"{path}: not a resource of a log directory", url=path)
        # os.path rather than pathlib: pathlib interns every path component.
        file = os.path.join(self._root, *parts)
        try:
            with open(file, "rb") as f:
                # Check the size first: read(max_bytes + 1) would allocate that much.
                size = os.fstat(f.fileno()).st_size
                data = f.read(max_bytes + 1) if size > max_bytes else f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise ResourceNotFound(
                f"{path}: not in the log directory {self.root}", url=str(file)
            ) from None
        except IsADirectoryError:
            raise FetchFailed(
                f"{path}: is a directory, not a file, in {self.root}", url=str(file)
            ) from None
        except OSError as err:
            raise SourceUnavailable(
                f"{path}: cannot read {file}: {err.strerror or err}", url=str(file)
            ) from None
        if len(data) > max_bytes:
            raise FetchFailed(
                f"{path}: larger than the {max_bytes} bytes it can be ({file})", url=str(file)
            )
        return data


class HTTPSource:
    """A log served over HTTP(S) under ``prefix`` (C2SP tlog-tiles read API).

    Every request carries ``Authorization: Bearer <token>`` when a token is given
    (never forwarded across a redirect) and asks for gzip, which is decoded. A
    fetch fails after ``timeout`` seconds in total. Construction raises
    SourceUnavailable for a URL that is not ``http(s)://host[:port][/path]``.
    """

    def __init__(
        self, prefix: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.prefix = _check_url(prefix)
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if token is not None and (not token or any(c in token for c in "\r\n")):
            raise ValueError("a bearer token must be non-empty and on one line")
        self.timeout = timeout
        self._token = token
        self._opener = _build_opener()

    def __repr__(self) -> str:
        # Never show the token.
        return f"HTTPSource({self.prefix!r}, timeout={self.timeout})"

    def location(self, path: str) -> str:
        """Return the URL of ``path``."""
        return f"{self.prefix}/{path}"

    def fetch(self, path: str, *, max_bytes: int) -> bytes:
        """Return the body of ``GET <prefix>/<path>`` (see :class:`TileSource`)."""
        url = self.location(path)
        request = urllib.request.Request(  # noqa: S310 (scheme checked: http or https)
            url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "gzip"}
        )
        if self._token is not None:
            request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _read_response(response, url, max_bytes, deadline, self.timeout)
        except urllib.error.HTTPError as err:
            status, reason = err.code, err.reason
            err.close()
            if status == 404:
                raise ResourceNotFound(
                    f"GET {url}: HTTP 404 {reason}", url=url, status=status
                ) from None
            raise FetchFailed(
                f"GET {url}: HTTP {status} {reason}", url=url, status=status
            ) from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError | socket.timeout):
                raise _timeout(url, self.timeout) from None
            raise SourceUnavailable(f"GET {url}: cannot connect: {err.reason}", url=url) from None
        except TimeoutError:
            raise _timeout(url, self.timeout) from None
        except (http.client.HTTPException, OSError) as err:
            # Connected, then the server broke the exchange (closed the connection,
            # sent a malformed status line, reset it): the log misbehaved.
            raise FetchFailed(
                f"GET {url}: broken HTTP answer: {type(err).__name__}: {err}", url=url
            ) from None


def open_source(
    location: str | os.PathLike[str],
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> TileSource:
    """Return the source for an ``http://`` or ``https://`` prefix, or a local directory.

    Raises SourceUnavailable for a malformed URL or a path that is not a directory.
    """
    text = os.fspath(location)
    if "://" in text:
        return HTTPSource(text, token=token, timeout=timeout)
    return DirSource(text)


@dataclass(frozen=True)
class FetchedTile:
    """A tile or bundle as fetched: its bytes, the path they came from, and whether
    that was the full tile fetched in place of a missing partial one."""

    data: bytes
    path: str
    full_fallback: bool


def fetch_tile(source: TileSource, tile: TileID) -> FetchedTile:
    """Return the bytes of hash tile or entry bundle ``tile``.

    C2SP tlog-tiles lets a client fetch the full tile when a partial one is gone
    (logs may delete partial tiles once the full tile exists), so a partial tile that
    is not found is fetched as the full tile; the caller takes its first ``width``
    hashes or entries. Raises the partial tile's ResourceNotFound if neither exists,
    and what :meth:`TileSource.fetch` raises otherwise.
    """
    limit = MAX_BUNDLE_BYTES if tile.entries else MAX_TILE_BYTES
    if tile.width == TILE_WIDTH:
        return FetchedTile(source.fetch(tile.path, max_bytes=limit), tile.path, False)
    try:
        return FetchedTile(source.fetch(tile.path, max_bytes=limit), tile.path, False)
    except ResourceNotFound as missing:
        full = TileID(tile.level, tile.index, TILE_WIDTH, tile.entries)
        try:
            return FetchedTile(source.fetch(full.path, max_bytes=limit), full.path, True)
        except ResourceNotFound:
            raise missing from None


def fetch_checkpoint(source: TileSource) -> bytes:
    """Return the bytes of the log's latest checkpoint, ``<prefix>/checkpoint``."""
    return source.fetch("checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)


def fetch_consistency_proof(source: TileSource, old: int, new: int) -> list[bytes]:
    """Return the log's consistency proof from size ``old`` to size ``new``.

    Asks ``GET <prefix>/proof/consistency?old=M&new=N`` (Bucket's HTTP API), which
    answers ``{"old": M, "new": N, "proof": [base64, ...]}``. Nothing is verified
    here beyond the shape: that is :func:`verifier.proof.verify_consistency`'s job.
    Raises FetchFailed for an answer of the wrong shape, SourceUnavailable for a
    source that is not HTTP (a log directory has no proof endpoint).
    """
    if not isinstance(source, HTTPSource):
        raise SourceUnavailable(
            f"{source!r} serves no consistency proofs: use an http(s):// log URL",
            url=repr(source),
        )
    path = f"proof/consistency?old={old}&new={new}"
    url = source.location(path)
    body = source.fetch(path, max_bytes=MAX_PROOF_RESPONSE_BYTES)
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise FetchFailed(f"GET {url}: answer is not JSON: {err}", url=url) from None
    if not isinstance(answer, dict):
        raise FetchFailed(f"GET {url}: answer is not a JSON object", url=url)
    for name, want in (("old", old), ("new", new)):
        got = answer.get(name)
        if type(got) is not int or got != want:
            raise FetchFailed(
                f"GET {url}: answer has {name}={got!r}, asked for {name}={want}", url=url
            )
    hashes = answer.get("proof")
    if not isinstance(hashes, list) or len(hashes) > MAX_PROOF_HASHES:
        raise FetchFailed(
            f"GET {url}: 'proof' is not a list of at most {MAX_PROOF_HASHES} hashes", url=url
        )
    proof = []
    for i, item in enumerate(hashes):
        raw = _b64decode_canonical(item) if isinstance(item, str) else None
        if raw is None or len(raw) != HASH_SIZE:
            raise FetchFailed(
                f"GET {url}: proof hash {i} is not canonical base64 of 32 bytes", url=url
            )
        proof.append(raw)
    return proof


# --- HTTP plumbing -----------------------------------------------------------------------


def _check_url(prefix: str) -> str:
    """Return ``prefix`` without trailing slashes if it is a usable http(s) URL prefix;
    raise SourceUnavailable otherwise."""
    try:
        parts = urllib.parse.urlsplit(prefix)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as err:
        raise SourceUnavailable(f"bad log URL {prefix!r}: {err}", url=prefix) from None
    if parts.scheme not in ("http", "https"):
        raise SourceUnavailable(
            f"bad log URL {prefix!r}: only http:// and https:// are supported", url=prefix
        )
    if not parts.hostname:
        raise SourceUnavailable(f"bad log URL {prefix!r}: no host name", url=prefix)
    if parts.query or parts.fragment or any(c.isspace() for c in prefix):
        raise SourceUnavailable(
            f"bad log URL {prefix!r}: a log prefix has no query, fragment or spaces", url=prefix
        )
    return prefix.rstrip("/")


def _build_opener() -> urllib.request.OpenerDirector:
    """Return an opener that speaks only HTTP and HTTPS (no file:, ftp: or data: URLs,
    not even after a redirect), honours proxy settings and follows redirects."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ]
    if hasattr(urllib.request, "HTTPSHandler"):
        handlers.append(urllib.request.HTTPSHandler())
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def _timeout(url: str, seconds: float) -> FetchFailed:
    return FetchFailed(f"GET {url}: no complete answer within {seconds:g} s (timeout)", url=url)


def _read_response(
    response: http.client.HTTPResponse, url: str, max_bytes: int, deadline: float, timeout: float
) -> bytes:
    """Return the decoded body of ``response``: at most ``max_bytes`` bytes, all of
    them by ``deadline``, and all that Content-Length promised."""
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise FetchFailed(f"GET {url}: unsupported Content-Encoding {encoding!r}", url=url)
    # gzip adds a few bytes to incompressible data; allow for it on the wire.
    wire_limit = max_bytes if encoding == "identity" else max_bytes + max_bytes // 64 + 1024
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise _timeout(url, timeout)
        chunk = response.read(min(_CHUNK, wire_limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > wire_limit:
            raise FetchFailed(f"GET {url}: answer is larger than {max_bytes} bytes", url=url)
    body = b"".join(chunks)
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) != len(body):
        raise FetchFailed(
            f"GET {url}: truncated answer: {len(body)} of {int(length)} bytes", url=url
        )
    if encoding == "identity":
        return body
    inflater = zlib.decompressobj(wbits=31)  # gzip container (RFC 1952)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise FetchFailed(f"GET {url}: bad gzip body: {err}", url=url) from None
    if len(data) > max_bytes:
        raise FetchFailed(f"GET {url}: answer is larger than {max_bytes} bytes", url=url)
    if not inflater.eof or inflater.unused_data:
        raise FetchFailed(f"GET {url}: truncated or trailing gzip data", url=url)
    return data
