"""The offline model: deterministic, local, no key, no network.

It reads each request the way a real model reads prose, by the prompts' section markers, and
answers every tier: Tier 1 tracks and Tier 2 tickets (providers/offline_plan.py: they follow the
repository map when the request has one), Tier 3 worker turns with tool calls
(providers/offline_worker.py: it reads the files it changes and edits them in place), Tier 4 a
diagnosis (here).

Threads: the executor thread of the agent that calls generate(); one provider is shared by
every agent. State owned: the pacing settings (fixed) and a ToolsTextCache (safe to share).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from models import Usage
from providers.base import (ChunkFn, ModelRequest, ModelResponse, RetryFn, ToolCall,
                            ToolsTextCache, estimate_tokens)
from providers.offline_plan import tier1, tier2
from providers.offline_text import section
from providers.offline_worker import worker_turn


class OfflineProvider:
    """A deterministic local model. Same request in, same answer out.

    Tier 1 -> tracks; Tier 2 -> a ticket DAG (with real parallelism when the task allows);
    Tier 3 -> a worker that lists, reads, writes or edits, reviews, runs one shell command,
    then summarises; Tier 4 -> a diagnosis. An edited prompt changes what it does. Streams in
    chunks `pace_s` apart, after `latency_s`.
    """

    name = "offline"

    def __init__(self, pace_s: float = 0.01, latency_s: float = 0.0, chunk_chars: int = 24,
                 sleep: Callable[[float], None] = time.sleep):
        self.pace_s = pace_s
        self.latency_s = latency_s
        self.chunk_chars = max(1, chunk_chars)
        self._sleep = sleep
        self._request_text = ToolsTextCache()

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        if self.latency_s:
            self._sleep(self.latency_s)
        user = request.messages[0].text if request.messages else ""
        calls: list[ToolCall] = []
        if request.tier == "Tier 1":
            text = tier1(user)
        elif request.tier == "Tier 2":
            text = tier2(user)
        elif request.tier == "Tier 3":
            text, calls = worker_turn(request.messages)
        else:
            text = self._tier4(request)
        n = self.chunk_chars
        for i in range(0, len(text), n):
            on_chunk(text[i:i + n])
            if self.pace_s:
                self._sleep(self.pace_s)
        out_text = text + "".join(json.dumps({"name": c.name, "args": c.args}) for c in calls)
        inp = estimate_tokens(self._request_text(request))
        out = estimate_tokens(out_text)
        usage = Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, requests=1)
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model="offline",
                             finish_reason="STOP")

    @staticmethod
    def _tier4(req: ModelRequest) -> str:
        user = req.messages[0].text if req.messages else ""
        out = section(user, "OUTPUT")
        what = section(user, f"FAILURE IN TICKET {req.ticket_id}") or user[:200]
        lines = [ln for ln in out.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        hint = "a missing file or command" if re.search(r"not found|No such file", out) else \
            "a syntax or runtime error in the code" if re.search(r"Error|Traceback", out) else \
            "a failing check"
        return (f"Diagnosis: the step failed on {hint}. Last line: {last[:200]}\n"
                f"Next steps: 1) read the full output of: {what.strip()[:160]} "
                f"2) fix the file it names 3) run the check again.\n")
