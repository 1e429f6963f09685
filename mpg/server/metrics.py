"""The server's Prometheus metrics (`GET /metrics`), in a registry of their own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "mpg_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "mpg_prompt_tokens", "Context tokens of the anchor policy, summed", registry=r
        )
        self.completion_tokens = Counter("mpg_completion_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("mpg_queue_depth", "Requests waiting to join a batch", registry=r)
        self.running = Gauge("mpg_running_sequences", "Sequences in running batches", registry=r)
        buckets = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
        self.ttft = Histogram(
            "mpg_time_to_first_token_seconds", "From arrival to the first token", buckets=buckets, registry=r
        )
        self.latency = Histogram(
            "mpg_request_latency_seconds", "From arrival to the last token", buckets=buckets, registry=r
        )
        self.drafted = Counter(
            "mpg_drafted_tokens", "Tokens drafted by proposals (speculative, scr)", registry=r
        )
        self.accepted = Counter("mpg_accepted_tokens", "Drafted tokens accepted", registry=r)
        self.acceptance = Histogram(
            "mpg_acceptance_rate",
            "Per-sequence acceptance rate (speculative, scr)",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.clips = Counter("mpg_scr_clips", "SCR drafts judged with an exceeded bound", registry=r)
        self.fallbacks = Counter(
            "mpg_scr_fallbacks", "SCR exact tokens after max_rejections empty drafts", registry=r
        )

    def record_sequence(self, stats) -> None:
        """Counts of one finished sequence (a `SequenceStats`)."""
        self.completion_tokens.inc(stats.new_tokens)
        if stats.drafted_tokens:
            self.drafted.inc(stats.drafted_tokens)
            self.accepted.inc(stats.accepted_tokens)
            self.acceptance.observe(stats.acceptance_rate)
        self.clips.inc(stats.clips)
        self.fallbacks.inc(stats.fallbacks)
