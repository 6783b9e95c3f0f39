"""Event path: chunks pushed from 8 executor threads through the asyncio queue to the GUI inbox.

The production path end to end: 8 AgentSessions (made by the engine's own `_session_for`) run
in the engine's executor threads; their provider calls `on_chunk` as fast as it can (or paced);
each chunk goes AgentSession._on_chunk -> the engine's emitter (events.put_threadsafe ->
run_coroutine_threadsafe) -> AsyncEventQueue -> the engine's `_pump` -> StreamBuffers + Inbox.
A consumer thread drains the inbox like the GUI: once per 16.7 ms frame ("60 Hz"), or
continuously (polling every 0.5 ms).

Each logical chunk carries its own id in its text, so latency is measured per chunk pushed
(put time -> the drain that delivered it) however the engine groups chunks into events.
Throughput = chunks pushed / (last chunk drained - first chunk pushed).

Targets: >= 50,000 chunks/s; p99 put->drain latency <= 16.7 ms, measured on the path (the
continuous consumer drains at once). A 60 Hz consumer adds the wait for its next frame, up to
16.7 ms by itself, so its p99 is printed (with the frames a chunk missed) but not held to it.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import asyncio
import concurrent.futures
import os
import threading
import time

from _common import (TempWorkspace, bench_settings, header, median, percentile, report,
                     summary)

THREADS = 8
UNIT = 16                       # characters per logical chunk (the offline model streams 24)
TARGET_RATE = 50_000
TARGET_P99_MS = 16.7


def _unit(thread: int, seq: int) -> str:
    s = f"<{thread}:{seq}>"
    return s + "." * (UNIT - len(s))


class BurstProvider:
    """Streams `n` chunks per call; paced to `rate` chunks/s per thread when rate > 0."""
    name = "burst"

    def __init__(self, n: int, rate: float, put_times: list[list[float]]):
        self.n, self.rate, self.put_times = n, rate, put_times

    def generate(self, req, on_chunk, on_retry=None):
        from ai_client import ModelResponse
        from models import Usage
        th = int(req.ticket_id.split("-")[1])
        times = self.put_times[th]
        pc = time.perf_counter
        if self.rate <= 0:
            for i in range(self.n):
                times[i] = pc()
                on_chunk(_unit(th, i))
        else:
            burst_every = 0.002                      # emit in 2 ms bursts
            per_burst = max(1, round(self.rate * burst_every))
            t0 = pc()
            i = 0
            while i < self.n:
                for _ in range(min(per_burst, self.n - i)):
                    times[i] = pc()
                    on_chunk(_unit(th, i))
                    i += 1
                nxt = t0 + (i / per_burst) * burst_every
                d = nxt - pc()
                if d > 0:
                    time.sleep(d)
        return ModelResponse(text="", usage=Usage(input_tokens=1, output_tokens=1,
                                                  total_tokens=2, requests=1))


def run(mode: str, consumer: str, n_per_thread: int) -> dict[str, float]:
    """mode: 'saturate' (push as fast as possible) or 'paced' (50k/s offered in total)."""
    from events import StreamChunk, StreamEnd
    from multi_agent_conductor import ConductorEngine
    from models import stream_tier3

    put_times = [[0.0] * n_per_thread for _ in range(THREADS)]
    rate = 0.0 if mode == "saturate" else TARGET_RATE / THREADS
    provider = BurstProvider(n_per_thread, rate, put_times)
    with TempWorkspace() as ws:
        eng = ConductorEngine(ws, bench_settings(), provider=provider, auto_approve=True)
        eng.start()
        try:
            drains: list[tuple[float, list]] = []
            ticks: list[float] = []              # every drain, empty or not
            ends = set()
            stop = threading.Event()
            expected_chars = THREADS * n_per_thread * UNIT
            seen_chars = [0]

            def consume() -> None:
                period = 1 / 60 if consumer == "60hz" else 0.0005
                nxt = time.perf_counter()
                while not stop.is_set():
                    evts = eng.inbox.drain()
                    now = time.perf_counter()
                    ticks.append(now)
                    if evts:
                        # keep only the texts (strings are not tracked by the GC, so holding
                        # them does not slow the collector down the way 200k events would)
                        texts = []
                        for e in evts:
                            if isinstance(e, StreamChunk):
                                texts.append(e.text)
                                seen_chars[0] += len(e.text)
                            elif isinstance(e, StreamEnd):
                                ends.add(e.stream_id)
                        drains.append((now, texts))
                        if seen_chars[0] >= expected_chars and len(ends) >= THREADS:
                            return
                    nxt += period
                    d = nxt - time.perf_counter()
                    if d > 0:
                        time.sleep(d)
                    else:
                        nxt = time.perf_counter()

            eng.inbox.drain()
            cons = threading.Thread(target=consume, name="bench-consumer")
            cons.start()

            def worker(th: int) -> None:
                sid = stream_tier3(f"B-{th}")
                s = eng._session_for("Tier 3", sid, "bench", track_id="bench",
                                     ticket_id=f"B-{th}")
                s.send("go")
                eng._emitter()(StreamEnd(stream_id=sid, state="done"))

            futs = [eng._executor.submit(worker, th) for th in range(THREADS)]
            for f in futs:
                f.result(120)
            cons.join(120)
            stop.set()
        finally:
            eng.close()

    # latency per logical chunk: its put time -> the drain that delivered it
    import re
    unit_re = re.compile(r"<(\d+):(\d+)>")
    import bisect
    lat: list[float] = []
    missed: list[int] = []      # drains that came after the put and did not deliver the chunk
    n_events = 0
    last_drain = 0.0
    for t, texts in drains:
        for text in texts:
            n_events += 1
            for m in unit_re.finditer(text):
                put = put_times[int(m.group(1))][int(m.group(2))]
                lat.append((t - put) * 1000)
                missed.append(bisect.bisect_left(ticks, t) - bisect.bisect_right(ticks, put))
            last_drain = t
    total = THREADS * n_per_thread
    first_put = min(ts[0] for ts in put_times)
    last_put = max(ts[-1] for ts in put_times)
    return {"chunks": len(lat), "expected": total, "events": n_events,
            "rate": len(lat) / (last_drain - first_put),
            "push_rate": total / (last_put - first_put),
            "p50": median(lat), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
            "max": max(lat), "missed_p99": percentile(missed, 99),
            "missed_max": max(missed)}


def raw_put(n: int, legacy: bool) -> float:
    """The primitive alone, 8 threads into one queue drained by a coroutine.
    legacy=True: one asyncio.run_coroutine_threadsafe(queue.put(evt), loop) per event (the
    design before batching); False: events.put_threadsafe as it is now."""
    from events import AsyncEventQueue, StreamChunk, put_threadsafe
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    q = AsyncEventQueue(loop)
    got = [0]
    done = threading.Event()

    async def drain():
        while True:
            await q.get()
            got[0] += 1
            if got[0] >= n * THREADS:
                done.set()
                return
    task = asyncio.run_coroutine_threadsafe(drain(), loop)

    def prod(_i: int) -> None:
        e = StreamChunk(stream_id="s", text="x" * UNIT)
        for _ in range(n):
            if legacy:
                asyncio.run_coroutine_threadsafe(q.put(e), loop)
            else:
                put_threadsafe(q, e, loop)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(prod, range(THREADS)))
    done.wait(120)
    dt = time.perf_counter() - t0
    task.result(5)
    loop.call_soon_threadsafe(loop.stop)
    th.join(5)
    loop.close()
    return n * THREADS / dt


def main() -> int:
    print(f"bench/events.py: {THREADS} executor threads -> asyncio queue -> inbox; "
          f"{os.cpu_count()} CPUs")
    header("the primitive alone: 8 threads -> AsyncEventQueue -> a draining coroutine")
    legacy = raw_put(5_000, legacy=True)
    now = raw_put(50_000, legacy=False)
    report("per-event run_coroutine_threadsafe (before)", legacy, "events/s", fmt="{:,.0f}")
    report("events.put_threadsafe (batched, now)", now, "events/s", fmt="{:,.0f}",
           note=f"{now / legacy:.1f}x the per-event path")

    print(f"load average before the runs: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(other processes on this machine's 2 cores show up as latency tails)")
    n_sat = 25_000
    for consumer in ("60hz", "continuous"):
        header(f"saturating: 8 x {n_sat:,} chunks pushed as fast as possible; "
               f"consumer {consumer}")
        r = run("saturate", consumer, n_sat)
        assert r["chunks"] == r["expected"], r
        print(f"  pushed at {r['push_rate']:,.0f} chunks/s; {r['chunks']:,} chunks arrived in "
              f"{r['events']:,} StreamChunk events")
        report(f"throughput ({consumer})", r["rate"], "chunks/s", target=TARGET_RATE,
               higher_is_better=True, fmt="{:,.0f}")
        report(f"saturated latency p50 ({consumer})", r["p50"], "ms", fmt="{:.2f}",
               note="a backlog by construction: producers outrun the consumer")
        report(f"saturated latency p99 ({consumer})", r["p99"], "ms", fmt="{:.2f}")

    n_paced = 12_500                     # 2 s at 50,000 chunks/s offered in total
    repeats = 3
    for consumer in ("continuous", "60hz"):
        header(f"paced: 8 threads x 6,250 chunks/s (50,000/s offered) for 2 s, {repeats} runs; "
               f"consumer {consumer}")
        runs = []
        for _ in range(repeats):
            r = run("paced", consumer, n_paced)
            assert r["chunks"] == r["expected"], r
            runs.append(r)
            print(f"  run: pushed {r['push_rate']:,.0f}/s, delivered {r['rate']:,.0f}/s; latency "
                  f"p50 {r['p50']:.2f} p95 {r['p95']:.2f} p99 {r['p99']:.2f} max {r['max']:.1f} ms"
                  f"; drains missed p99 {r['missed_p99']} max {r['missed_max']}"
                  f"; load {os.getloadavg()[0]:.2f}")
        mid = sorted(runs, key=lambda r: r["p99"])[len(runs) // 2]
        report(f"paced delivered/offered ({consumer})", mid["rate"] / mid["push_rate"], "",
               target=0.99, higher_is_better=True, fmt="{:.3f}")
        report(f"paced latency p50 ({consumer})", mid["p50"], "ms", fmt="{:.2f}")
        report(f"paced drains missed p99 ({consumer})", mid["missed_p99"], "drains",
               fmt="{:.0f}", note="drains between a chunk's put and the one that delivered it")
        if consumer == "continuous":
            report("paced latency p99 (the event path: put -> in the inbox)", mid["p99"],
                   "ms", target=TARGET_P99_MS, fmt="{:.2f}",
                   note="continuous consumer: the drain is at once, so this is the path alone")
        else:
            # A consumer that drains once per frame waits U(0, 16.7 ms) for the frame after a
            # chunk arrives, whatever the path: its p99 is ~16.5 ms plus the path's tail, so
            # the 16.7 ms target is the path's (above); here what matters is how many frames
            # a chunk misses.
            report("paced latency p99 (60 Hz consumer: path + wait for the frame)", mid["p99"],
                   "ms", fmt="{:.2f}", note="no target: a frame's wait is up to 16.7 ms alone")
    return summary("bench/events.py")


if __name__ == "__main__":
    raise SystemExit(main())
