from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coinslot import signer as signer_module
from coinslot.signer import SigningProcess


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@pytest.fixture
async def signing() -> AsyncIterator[SigningProcess]:
    process = SigningProcess()
    await process.start()
    assert process.running
    yield process
    await process.stop()


async def test_one_tick_of_signatures_goes_to_the_child_and_verifies(signing: SigningProcess) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    messages = [f"message {i}".encode() * (i % 7 + 1) for i in range(200)]
    # Two keys in one tick, as when a rotation lands between requests.
    keyed = [(old if i % 3 else new, m) for i, m in enumerate(messages)]
    futures = [signing.sign(raw(k), k, m) for k, m in keyed]
    assert signing._queue, "the calls of one tick wait to be sent together"
    signatures = await asyncio.gather(*futures)
    for (key, message), signature in zip(keyed, signatures, strict=True):
        key.public_key().verify(signature, message)  # raises InvalidSignature if wrong
        # Ed25519 is deterministic: libsodium in the child and OpenSSL inline agree byte for byte.
        assert signature == key.sign(message)
    assert signing.running


async def test_a_dead_child_is_answered_for_inline_and_restarted(
    signing: SigningProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signer_module, "RESTART_PAUSE_S", 0.0)
    key = Ed25519PrivateKey.generate()
    proc = signing._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    # Sent to the dead child, or signed inline once it is seen gone: every call is answered.
    signatures = await asyncio.gather(*(signing.sign(raw(key), key, b"m%d" % i) for i in range(50)))
    for i, signature in enumerate(signatures):
        key.public_key().verify(signature, b"m%d" % i)
    for _ in range(100):
        await asyncio.sleep(0.05)
        await signing.sign(raw(key), key, b"poke")
        if signing.running and signing._proc is not proc:
            break
    assert signing.running and signing._proc is not proc, "a new child takes over after the pause"
    signature = await signing.sign(raw(key), key, b"after")
    key.public_key().verify(signature, b"after")


async def test_without_a_child_signing_is_inline() -> None:
    process = SigningProcess()  # never started
    key = Ed25519PrivateKey.generate()
    signature = await process.sign(raw(key), key, b"inline")
    key.public_key().verify(signature, b"inline")
    await process.stop()


async def test_stop_answers_what_was_sent_and_ends_the_child(signing: SigningProcess) -> None:
    key = Ed25519PrivateKey.generate()
    proc = signing._proc
    assert proc is not None
    futures = [signing.sign(raw(key), key, b"x%d" % i) for i in range(20)]
    await asyncio.sleep(0)  # sent, not yet answered
    await signing.stop()
    for i, signature in enumerate(await asyncio.gather(*futures)):
        key.public_key().verify(signature, b"x%d" % i)
    assert proc.returncode is not None


async def test_a_stuck_child_is_killed_and_its_batch_signed_inline(
    signing: SigningProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(signer_module, "STALL_S", 0.2)
    key = Ed25519PrivateKey.generate()
    proc = signing._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        signatures = await asyncio.wait_for(
            asyncio.gather(*(signing.sign(raw(key), key, b"s%d" % i) for i in range(10))), timeout=5
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    for i, signature in enumerate(signatures):
        key.public_key().verify(signature, b"s%d" % i)
    assert "answered nothing" in caplog.text
    await proc.wait()


async def test_frames_of_many_ticks_in_flight_are_answered_each_in_order(signing: SigningProcess) -> None:
    key = Ed25519PrivateKey.generate()
    futures: list[asyncio.Future[bytes]] = []
    for tick in range(30):  # frames of 1 to 30 inputs, sent before earlier ones are answered
        futures += [signing.sign(raw(key), key, f"{tick}/{i}".encode()) for i in range(tick + 1)]
        await asyncio.sleep(0)
    signatures = await asyncio.gather(*futures)
    messages = [f"{tick}/{i}".encode() for tick in range(30) for i in range(tick + 1)]
    for message, signature in zip(messages, signatures, strict=True):
        key.public_key().verify(signature, message)
    assert signing.running
