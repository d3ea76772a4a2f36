"""The garbage-collector policy (firmware/sip/gc_policy.py) and when the SIP stack asks for
its after-load tidy-up: only once the last transaction has gone and it stayed quiet."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from firmware.sip import gc_policy
from firmware.sip import stack as stack_module
from firmware.sip.message import Request, make_response
from firmware.sip.stack import Address, SipStack
from firmware.sip.timers import TimerSettings
from firmware.sip.transaction import ServerTransaction


def test_settling_freezes_the_start_up_heap_and_makes_full_passes_rarer_once() -> None:
    gc_policy.settle_after_start()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # at least the imported modules' objects
    assert gc.get_threshold()[2] == gc_policy.FULL_PASS_EVERY == 100
    kept = [object() for _ in range(10)]  # noqa: F841 - alive across the second call
    gc_policy.settle_after_start()
    assert gc.get_freeze_count() == frozen  # a second service start changes nothing


def test_after_load_collects_and_trims_at_most_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    clock = [1000.0]
    monkeypatch.setattr(gc_policy, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    monkeypatch.setattr(gc_policy, "_last_release", float("-inf"))
    monkeypatch.setattr(gc_policy.time, "monotonic", lambda: clock[0])
    assert gc_policy.release_due_in() == 0.0
    assert gc_policy.after_load() is True
    assert trims == [0]  # malloc_trim(0): keep no padding at the top of the heap
    clock[0] += 59.5
    assert gc_policy.release_due_in() == pytest.approx(0.5)
    assert gc_policy.after_load() is False
    clock[0] += 0.5
    assert gc_policy.after_load() is True
    assert trims == [0, 0]


class Answerer:
    def __init__(self) -> None:
        self.stack: SipStack | None = None

    def __call__(self, transaction: ServerTransaction | None, request: Request, source: Address) -> None:
        assert self.stack is not None and transaction is not None
        self.stack.respond(transaction, make_response(request, 200))


def options(branch: str) -> bytes:
    return (
        "OPTIONS sip:b2b@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{branch}\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:b2b@127.0.0.1>\r\n"
        f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_the_stack_tidies_up_once_after_its_last_transaction_and_a_quiet_spell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(stack_module, "AFTER_LOAD_DELAY_S", 0.5)
    monkeypatch.setattr(gc_policy, "release_due_in", lambda now=None: 0.0)
    monkeypatch.setattr(gc_policy, "after_load", lambda: calls.append(len(stack.layer)) or True)
    answerer = Answerer()
    # T1 = 10 ms: timer J (64*T1) ends a non-INVITE server transaction after 0.64 s.
    stack = SipStack(answerer, tcp=False, timer_settings=TimerSettings(t1=0.01, t2=0.04, t4=0.05))
    answerer.stack = stack
    await stack.start("127.0.0.1", 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(peer, options("one"), stack.local_address)
        await asyncio.wait_for(loop.sock_recv(peer, 4096), 2)
        assert len(stack.layer) == 1
        await asyncio.sleep(0.5)  # the transaction waits out timer J: no tidy-up yet
        assert calls == [] and len(stack.layer) == 1
        await asyncio.sleep(0.3)  # J fired at 0.64 s; the quiet spell (0.5 s) has begun
        assert calls == [] and len(stack.layer) == 0
        # A request within the quiet spell puts the tidy-up off until after its own one.
        await loop.sock_sendto(peer, options("two"), stack.local_address)
        await asyncio.wait_for(loop.sock_recv(peer, 4096), 2)
        await asyncio.sleep(0.8)  # the first spell ended busy; the second one is running
        assert calls == [] and len(stack.layer) == 0
        await asyncio.sleep(0.8)
        assert calls == [0]  # once, with no transaction left
        await asyncio.sleep(0.5)
        assert calls == [0]
    finally:
        peer.close()
        await stack.stop()
