"""The HTTP side of `mpg serve`: OpenAI-compatible routes on FastAPI, answered by the scheduler's worker.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, GET /metrics.
Bad input is a 400 with an OpenAI-style error object, a full queue a 429, shutdown a 503; a client
that goes away has its sequences cancelled (rows freed at the worker's next step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics
from .protocol import Presets, RequestError, parse_request
from .scheduler import Job, Scheduler

__all__ = ["create_app", "streamable_text"]

STAT_FIELDS = (
    "new_tokens",
    "drafted_tokens",
    "accepted_tokens",
    "rounds",
    "rejections",
    "clips",
    "fallbacks",
)


def streamable_text(text: str, stops: list[str], finished: bool) -> str:
    """The part of a response's text that no later token can change: all of it once finished; before,
    without a trailing incomplete character (U+FFFD) or a tail that could begin a stop string."""
    if finished:
        return text
    text = text.rstrip("\ufffd")
    hold = 0
    for s in stops:  # the longest suffix of text that is a proper prefix of a stop string
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return text[: len(text) - hold]


class ChoiceText:
    """One choice's text as streamed: what has been sent, and the next delta as tokens arrive."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tok, self.stops, self.ids, self.sent = tokenizer, stops, [], ""

    def delta(self, new_ids: list[int] | None = None, final: str | None = None) -> str:
        self.ids += new_ids or []
        text = final if final is not None else self.tok.decode(self.ids, skip_special_tokens=True)
        safe = streamable_text(text, self.stops, final is not None)
        if not safe.startswith(self.sent) or len(safe) == len(self.sent):
            return ""  # nothing new that is certain (never send text that would be withdrawn)
        out, self.sent = safe[len(self.sent) :], safe
        return out


def mpg_stats(spec, members) -> dict:
    """The response's extra `mpg` field: the persona, seed, sampler and the sampler's counts."""
    per = [{k: getattr(m.seq.stats, k) for k in STAT_FIELDS} for m in members]
    total = {k: sum(p[k] for p in per) for k in STAT_FIELDS}
    acc = total["accepted_tokens"] / total["drafted_tokens"] if total["drafted_tokens"] else None
    return {
        "persona": spec.persona,
        "seed": spec.seed,
        "sampler": spec.settings.sampler,
        "acceptance_rate": acc,
        **total,
        "choices": [
            {**p, "acceptance_rate": m.seq.stats.as_json()["acceptance_rate"]} for p, m in zip(per, members)
        ],
    }


def create_app(
    engine,
    *,
    experts="auto",
    persona="ENTJ",
    max_batch=16,
    max_queue=64,
    max_tokens=1024,
    prefill_chunk=256,
    max_merged=4,
    threads=None,
) -> FastAPI:
    """The app; its scheduler's worker starts with the app (lifespan) and stops with it. prefill_chunk,
    max_merged and threads (a `mpg.threads.ThreadPolicy`): see `Scheduler`."""
    metrics = Metrics()
    scheduler = Scheduler(
        engine,
        max_batch,
        max_queue,
        metrics,
        prefill_chunk=prefill_chunk,
        max_merged=max_merged,
        threads=threads,
    )
    presets = Presets(persona)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        # uvicorn has already let in-flight requests finish (or cancelled them) within its grace time
        await asyncio.get_running_loop().run_in_executor(None, scheduler.close, app.state.close_timeout)

    app = FastAPI(
        title="mpg", description="Multi-personality generation, OpenAI-compatible", lifespan=lifespan
    )
    app.state.scheduler, app.state.metrics = scheduler, metrics
    app.state.close_timeout = 5.0

    def error(e: RequestError, endpoint: str) -> JSONResponse:
        metrics.requests.labels(endpoint, str(e.status)).inc()
        return JSONResponse(e.body(), status_code=e.status)

    @app.get("/health")
    async def health():
        running, waiting = scheduler.load()
        state = "ok" if scheduler.admitting else "shutting down"
        return {
            "status": state,
            "running": running,
            "waiting": waiting,
            "max_batch": max_batch,
            "max_queue": max_queue,
            "merged_adapters": [name for _, name in engine.registry.merged],
            "threads": scheduler.threads.current if scheduler.threads is not None else None,
        }

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "mpg", "persona": p or "base"}
            for name, p in presets.names.items()
        ]
        return {"object": "list", "data": data}

    async def complete(request: Request, kind: str):
        endpoint = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        arrived = time.perf_counter()
        try:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                raise RequestError("the request body is not valid JSON") from None
            spec = parse_request(engine, body, kind, presets, experts, max_tokens, max_batch)
        except RequestError as e:
            return error(e, endpoint)
        job = Job(spec, asyncio.get_running_loop())
        refused = scheduler.submit(job)
        if refused == "full":
            e = RequestError(f"the queue is full ({max_queue} requests waiting); retry later", status=429)
            return error(e, endpoint)
        if refused == "closed":
            return error(RequestError("the server is shutting down", status=503), endpoint)
        metrics.prompt_tokens.inc(spec.prompt_tokens)
        reply = Reply(spec, kind, engine.tokenizer, metrics, arrived)
        if spec.stream:
            metrics.requests.labels(endpoint, "200").inc()
            return StreamingResponse(reply.stream(job), media_type="text/event-stream")
        task = asyncio.ensure_future(reply.collect(job))
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                job.cancel()
                task.cancel()
                metrics.requests.labels(endpoint, "499").inc()
                return Response(status_code=499)
        try:
            members = task.result()
        except RequestError as e:
            return error(e, endpoint)
        metrics.requests.labels(endpoint, "200").inc()
        return JSONResponse(reply.body(members))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, "completion")

    return app


class Reply:
    """Turns one job's events into an OpenAI response: whole (`collect` + `body`) or streamed (`stream`)."""

    def __init__(self, spec, kind, tokenizer, metrics, arrived):
        self.spec, self.kind, self.tok, self.metrics, self.arrived = spec, kind, tokenizer, metrics, arrived
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.first_token = None

    async def events(self, job: Job):
        """Yield job events until every choice is done; an error event raises RequestError."""
        done = 0
        while done < len(self.spec.prompts):
            event = await job.events.get()
            if event[0] == "error":
                raise RequestError(event[2], status=event[1])
            if event[0] == "tokens" and self.first_token is None:
                self.first_token = time.perf_counter()
                self.metrics.ttft.observe(self.first_token - self.arrived)
            if event[0] == "done":
                done += 1
                self.metrics.record_sequence(event[2].seq.stats)
                if done == len(self.spec.prompts):
                    self.metrics.latency.observe(time.perf_counter() - self.arrived)
            yield event

    async def collect(self, job: Job) -> list:
        members = [None] * len(self.spec.prompts)
        async for event in self.events(job):
            if event[0] == "done":
                members[event[1]] = event[2]
        return members

    def usage(self, members) -> dict:
        completion = sum(len(m.tokens) for m in members)
        p = self.spec.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}

    def body(self, members) -> dict:
        if self.kind == "chat":
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": m.text},
                    "logprobs": None,
                    "finish_reason": m.finish_reason,
                }
                for i, m in enumerate(members)
            ]
        else:
            choices = [
                {"index": i, "text": m.text, "logprobs": None, "finish_reason": m.finish_reason}
                for i, m in enumerate(members)
            ]
        return {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.spec.model,
            "choices": choices,
            "usage": self.usage(members),
            "mpg": mpg_stats(self.spec, members),
        }

    def chunk(self, choices: list[dict], **extra) -> str:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        body = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.spec.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def piece(self, i: int, text: str | None, finish_reason=None, role=False) -> dict:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    async def stream(self, job: Job):
        """Server-sent events: a chunk whenever a choice's text grows by text no later token can change,
        a last chunk per choice with its finish_reason, usage if asked, then [DONE]."""
        texts = [ChoiceText(self.tok, self.spec.stop) for _ in self.spec.prompts]
        members = [None] * len(self.spec.prompts)
        finished = False
        try:
            if self.kind == "chat":
                yield self.chunk([self.piece(i, None, role=True) for i in range(len(texts))])
            async for event in self.events(job):
                kind, i = event[0], event[1]
                if kind == "tokens":
                    delta = texts[i].delta(event[2])
                    if delta:
                        yield self.chunk([self.piece(i, delta)])
                elif kind == "done":
                    members[i] = event[2]
                    delta = texts[i].delta(final=event[2].text)
                    extra = {"mpg": mpg_stats(self.spec, [event[2]])}
                    yield self.chunk([self.piece(i, delta, event[2].finish_reason)], **extra)
            if self.spec.include_usage:
                yield self.chunk([], usage=self.usage(members), mpg=mpg_stats(self.spec, members))
            finished = True
            yield "data: [DONE]\n\n"
        except RequestError as e:  # the generation failed or the server is stopping: say so, then end
            finished = True
            yield f"data: {json.dumps(e.body())}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away: free the rows
                job.cancel()
