"""Prometheus text for GET /metrics: the server's counters plus the engine's, read between steps."""
from __future__ import annotations

from collections import Counter


class ServerMetrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()  # (endpoint, outcome) -> count
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.disconnects = 0

    def count(self, endpoint: str, outcome: str) -> None:
        self.requests[(endpoint, outcome)] += 1

    def render(self, engine: dict, in_flight: int) -> str:
        lines = ["# HELP docgen_requests_total HTTP generation requests by endpoint and outcome.",
                 "# TYPE docgen_requests_total counter"]
        for (endpoint, outcome), n in sorted(self.requests.items()):
            lines.append(f'docgen_requests_total{{endpoint="{endpoint}",outcome="{outcome}"}} {n}')
        kv_total = engine.get("kv_blocks", 0) or 1
        gauges = [
            ("docgen_prompt_tokens_total", "counter", "Prompt tokens of served requests.", self.prompt_tokens),
            ("docgen_generation_tokens_total", "counter", "Tokens generated for served requests.",
             self.generation_tokens),
            ("docgen_client_disconnects_total", "counter", "Requests aborted because the client went away.",
             self.disconnects),
            ("docgen_requests_in_flight", "gauge", "Engine requests the server is waiting on.", in_flight),
            ("docgen_queue_depth", "gauge", "Engine requests waiting to be scheduled.", engine.get("waiting", 0)),
            ("docgen_requests_running", "gauge", "Engine requests in the running batch.", engine.get("running", 0)),
            ("docgen_kv_cache_usage", "gauge", "Fraction of KV-cache blocks in use (0..1).",
             1.0 - engine.get("kv_free_blocks", 0) / kv_total),
            ("docgen_kv_blocks_free", "gauge", "Free KV-cache blocks (prefix-cached ones included).",
             engine.get("kv_free_blocks", 0)),
            ("docgen_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
             engine.get("prefix_cache_hit_tokens", 0)),
            ("docgen_engine_prompt_tokens_total", "counter", "Prompt tokens the engine admitted.",
             engine.get("prompt_tokens", 0)),
            ("docgen_preemptions_total", "counter", "Requests preempted for lack of KV blocks.",
             engine.get("preemptions", 0)),
        ]
        for name, kind, help_, value in gauges:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
