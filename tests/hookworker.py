"""A webhook worker in a process of its own, as each ``coinslot serve`` process runs one:
``python tests/hookworker.py REDIS_URL [TIMEOUT_S]``. Stops on SIGTERM; SIGKILL is the crash."""

from __future__ import annotations

import asyncio
import signal
import sys

from coinslot.clock import SystemClock
from coinslot.hookdelivery import Deliverer
from coinslot.store import Store, connect


async def main(url: str, timeout_s: float) -> None:
    store = Store(await connect(url))
    deliverer = Deliverer(
        store,
        SystemClock(),
        lambda site, wallet: "pseudonym",
        livemode=False,
        allow_private=True,
        first_retry_s=0.2,
        timeout_s=timeout_s,
    )
    task = asyncio.create_task(deliverer.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print("ready", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await deliverer.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0))
