"""Ed25519 signatures made in a child process, beside the event loop.

A signature costs ~30-40 µs of CPU, a fifth of an unlock. Made on the event loop's thread it
stalls every other request for that long; made in a thread it waits for the GIL, which a
busy event loop hands over only every few milliseconds. A child process has its own
interpreter and core: the loop writes the signing inputs of one tick as one frame to the
child's stdin and reads the signatures back, in order, from its stdout as they come, with
no extra thread on the loop's side.

When the child is not running (not started yet, or it died) signatures are made inline,
so signing never fails for want of the child; a dead child is restarted after a pause.

Frame, parent to child: u32 count, the 32-byte raw private key, ``count`` u32 lengths,
then the signing inputs back to back. Reply: ``count`` signatures of 64 bytes each, written
in groups of ``STREAM_SIGNATURES``. The key travels with every frame, so the child needs no
state to follow a key rotation.

The child signs with libsodium (PyNaCl): ~29 µs a signature here against ~43 µs for
OpenSSL's Ed25519 through ``cryptography``. Ed25519 signatures are deterministic, so both
give the same bytes; the inline fallback keeps using the key ring's own key.

Run as ``python -m coinslot.signer``; it exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections import deque
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

log = logging.getLogger("coinslot.signer")

SIGNATURE_BYTES = 64
RAW_KEY_BYTES = 32
RESTART_PAUSE_S = 5.0  # after a child dies, sign inline this long before trying another
STALL_S = 1.0  # a batch unanswered this long means a stuck child: kill it and sign inline
STOP_TIMEOUT_S = 5.0
# The child sends signatures back this many at a time rather than a whole frame at once, so
# the first callers of a large tick need not wait for the last signature of it.
STREAM_SIGNATURES = 8


class _Batch:
    __slots__ = ("key", "inputs", "futures", "answered")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.inputs: list[bytes] = []
        self.futures: list[asyncio.Future[bytes]] = []
        self.answered = 0  # signatures read back so far, in order

    def settle_inline(self) -> None:
        for data, future in zip(self.inputs, self.futures, strict=True):
            if not future.done():
                future.set_result(self.key.sign(data))


class SigningProcess:
    """Signs on a child process; ``sign`` batches the calls of one event-loop tick."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queue: dict[bytes, _Batch] = {}  # raw key → the batch forming in this tick
        self._in_flight: deque[_Batch] = deque()
        self._flush_scheduled = False
        self._retry_at = 0.0
        self._stopping = False
        self._starting: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._reader is not None

    async def start(self) -> None:
        if self._proc is not None:
            return
        self._stopping = False
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "coinslot.signer",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("signing process did not start (%s); signing inline", exc)
            self._retry_at = time.monotonic() + RESTART_PAUSE_S
            return
        self._proc = proc
        self._reader = asyncio.create_task(self._read_replies(proc))

    async def stop(self) -> None:
        self._stopping = True
        if self._starting is not None:
            await self._starting
        proc, reader = self._proc, self._reader
        self._proc = self._reader = None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits at end of input, after answering what it has
        if not self._in_flight:
            # Nothing to answer: a child still importing (a stop right after start, on a busy
            # machine) need not finish starting only to read end of input.
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._fail_over()

    def sign(self, raw_key: bytes, key: Ed25519PrivateKey, data: bytes) -> asyncio.Future[bytes]:
        """The signature of ``data`` by ``key`` (whose raw private bytes are ``raw_key``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self.running:
            self._maybe_restart()
            future.set_result(key.sign(data))
            return future
        batch = self._queue.get(raw_key)
        if batch is None:
            batch = self._queue[raw_key] = _Batch(key)
        batch.inputs.append(data)
        batch.futures.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queue = self._queue, {}
        proc = self._proc
        if proc is None or proc.stdin is None or not self.running:
            for batch in queued.values():
                batch.settle_inline()
            return
        last = None
        for raw_key, batch in queued.items():
            count = len(batch.inputs)
            head = struct.pack(f">I{RAW_KEY_BYTES}s{count}I", count, raw_key, *map(len, batch.inputs))
            proc.stdin.write(head + b"".join(batch.inputs))
            self._in_flight.append(batch)
            last = batch
        if last is not None:
            # One timer per tick, on its last batch: replies come in order, so it vouches for the rest.
            asyncio.get_running_loop().call_later(STALL_S, self._check_stalled, proc, last)

    def _check_stalled(self, proc: asyncio.subprocess.Process, batch: _Batch) -> None:
        if all(future.done() for future in batch.futures) or self._proc is not proc:
            return
        log.warning("signing process answered nothing for %.1f s; killing it and signing inline", STALL_S)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # the reader then meets end of output and fails over

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            pending = b""
            while True:
                data = await proc.stdout.read(1 << 16)
                if not data:
                    raise asyncio.IncompleteReadError(pending, None)
                pending += data
                whole = len(pending) - len(pending) % SIGNATURE_BYTES
                for offset in range(0, whole, SIGNATURE_BYTES):
                    batch = self._in_flight[0]
                    future = batch.futures[batch.answered]
                    if not future.done():
                        future.set_result(pending[offset : offset + SIGNATURE_BYTES])
                    batch.answered += 1
                    if batch.answered == len(batch.futures):
                        self._in_flight.popleft()
                pending = pending[whole:]
        except asyncio.IncompleteReadError:
            if not self._stopping:
                log.warning("signing process ended (exit %s); signing inline for now", proc.returncode)
        except Exception:
            log.exception("signing process reply failed; signing inline for now")
        finally:
            if self._proc is proc:
                self._proc = self._reader = None
                self._retry_at = time.monotonic() + RESTART_PAUSE_S
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._fail_over()

    def _fail_over(self) -> None:
        """Sign inline whatever was sent to a child that can no longer answer."""
        while self._in_flight:
            self._in_flight.popleft().settle_inline()
        queued, self._queue = self._queue, {}
        for batch in queued.values():
            batch.settle_inline()

    def _maybe_restart(self) -> None:
        if self._stopping or self._proc is not None or self._starting is not None:
            return
        if time.monotonic() < self._retry_at:
            return
        self._starting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        try:
            await self.start()
        finally:
            self._starting = None


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if len(data) < n:
        return None
    return data


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child's loop: read a frame, answer its signatures, until end of input."""
    keys: dict[bytes, bytes] = {}  # raw private key (the seed) → libsodium's secret key
    head_size = struct.calcsize(f">I{RAW_KEY_BYTES}s")
    while True:
        head = _read_exactly(stdin, head_size)
        if head is None:
            return
        count, raw_key = struct.unpack(f">I{RAW_KEY_BYTES}s", head)
        lengths_raw = _read_exactly(stdin, 4 * count)
        if lengths_raw is None:
            return
        lengths = struct.unpack(f">{count}I", lengths_raw)
        data = _read_exactly(stdin, sum(lengths))
        if data is None:
            return
        key = keys.get(raw_key)
        if key is None:
            if len(keys) > 8:  # rotations are rare; never hold more than a handful
                keys.clear()
            key = keys[raw_key] = crypto_sign_seed_keypair(raw_key)[1]
        out = bytearray()
        offset = 0
        for length in lengths:
            # crypto_sign returns the signature followed by the message.
            out += crypto_sign(data[offset : offset + length], key)[:SIGNATURE_BYTES]
            offset += length
            if len(out) == STREAM_SIGNATURES * SIGNATURE_BYTES:
                stdout.write(out)
                stdout.flush()
                out.clear()
        if out:
            stdout.write(out)
            stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
