"""`mpg serve` as a real process on 127.0.0.1 (tiny model, tiny MBTI experts), called with `openai`."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tiny import add_lora, tiny_model, tiny_tokenizer

from mpg.engine import Engine
from mpg.expert_file import write_expert_info
from mpg.personas import AXIS_ADAPTERS, persona
from mpg.policies import Policy

openai = pytest.importorskip("openai")  # the `serve` extra; .ci/run installs it
httpx = pytest.importorskip("httpx2")  # what the openai client is built on
pytest.importorskip("fastapi")

CONTEXTS = {  # each side's training context, in the tiny vocabulary (a, b)
    "EI": {"E": "a a {prompt}", "I": "b b {prompt}"},
    "SN": {"S": "a b {prompt}", "N": "b a {prompt}"},
    "TF": {"T": "a {prompt} a", "F": "b {prompt} b"},
    "JP": {"J": "{prompt} a a", "P": "{prompt} b b"},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny base (4096 positions, so requests can run long) and four tiny axis experts on it."""
    root = tmp_path_factory.mktemp("serve")
    tok = tiny_tokenizer()
    tiny_model(max_positions=4096).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    for i, (axis, name) in enumerate(AXIS_ADAPTERS.items()):
        peft = add_lora(tiny_model(max_positions=4096), [name], seed=10 + i)
        peft.save_pretrained(root / "experts")
        write_expert_info(root / "experts" / name, peft, tok, CONTEXTS[axis], "tiny")
    engine = Engine.from_pretrained(root / "base")
    return root, engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIT_RATIO = "product,lam=1,plausibility=0.1,ratio=trait"


def start_server(root, *extra):
    port = free_port()
    log = open(root / f"server-{port}.log", "w")
    cmd = [
        sys.executable,
        "-m",
        "mpg",
        "serve",
        "--base",
        str(root / "base"),
        "--experts",
        str(root / "experts"),
        "--dtype",
        "float32",  # as the offline engine beside it (the default is bf16 on CPUs with native bf16)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the test process computes the offline texts beside it
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--max-tokens", "4000", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(root / f'server-{port}.log').read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server(setup):
    root, _ = setup
    proc, url = start_server(root, "--max-batch", "16")
    yield url
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


def offline(setup, prompt, seed, n, mbti="ENTJ", **kw):
    """What generate() gives for this request offline."""
    root, engine = setup
    p = persona(engine, mbti, experts=root / "experts", composition=kw.pop("composition", None))
    # the default composition's (plausibility included) unless aggregator / lam are asked
    target = p.target(aggregator=kw.pop("aggregator", None), lam=kw.pop("lam", None))
    return engine.generate(prompt, target=target, seed=seed, max_new_tokens=n, **kw).texts[0]


def test_models_and_health(client, server):
    ids = {m.id for m in client.models.list()}
    assert {"mpg", "mpg-base", "mpg-entj", "mpg-isfp"} <= ids
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_chat_and_completion_give_the_offline_text(client, setup):
    r = client.chat.completions.create(
        model="mpg", messages=[{"role": "user", "content": "a b"}], max_tokens=12, seed=7
    )
    assert r.choices[0].message.content == offline(setup, "a b", 7, 12)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens == 2  # "a b" under the anchor
    stats = r.model_extra["mpg"]
    assert stats["seed"] == 7 and stats["sampler"] == "fused" and stats["acceptance_rate"] is None
    assert {"clips", "fallbacks", "drafted_tokens"} <= set(stats)
    c = client.completions.create(
        model="mpg-isfp", prompt="b a", max_tokens=9, seed=3, extra_body={"sampler": "scr"}
    )
    assert c.choices[0].text == offline(setup, "b a", 3, 9, mbti="ISFP", sampler="scr")
    stats = c.model_extra["mpg"]
    assert stats["sampler"] == "scr" and 0 <= stats["acceptance_rate"] <= 1 and stats["drafted_tokens"] > 0


def test_persona_knobs_through_extra_body(client, setup):
    knobs = dict(persona="E=1,N=0.5", lam=0.5, aggregator="mixture", sampler="speculative", chunk_size=3)
    r = client.completions.create(
        model="mpg-base", prompt="a a b", max_tokens=10, seed=11, extra_body={**knobs, "ignore_eos": True}
    )
    want = offline(
        setup,
        "a a b",
        11,
        10,
        mbti="E=1,N=0.5",
        lam=0.5,
        aggregator="mixture",
        sampler="speculative",
        chunk_size=3,
        eos_token_id=[],
    )
    assert r.choices[0].text == want and r.usage.completion_tokens == 10
    assert r.model_extra["mpg"]["persona"].startswith("E=1")
    base = client.completions.create(
        model="mpg-base", prompt="a b", max_tokens=6, seed=1, extra_body={"sampler": "fused"}
    )
    _, engine = setup
    want = engine.generate("a b", policy=Policy(), sampler="fused", seed=1, max_new_tokens=6).texts[0]
    assert base.choices[0].text == want and base.model_extra["mpg"]["persona"] == "base"


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_streaming_sends_the_same_text_in_chunks(client, kind):
    kw = dict(max_tokens=24, seed=5, extra_body={"ignore_eos": True, "persona": "INTP"})
    if kind == "chat":
        whole = client.chat.completions.create(
            model="mpg", messages=[{"role": "user", "content": "b b"}], **kw
        )
        chunks = list(
            client.chat.completions.create(
                model="mpg", messages=[{"role": "user", "content": "b b"}], stream=True, **kw
            )
        )
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        text = whole.choices[0].message.content
        assert chunks[0].object == "chat.completion.chunk"
    else:
        whole = client.completions.create(model="mpg", prompt="b b", **kw)
        chunks = list(client.completions.create(model="mpg", prompt="b b", stream=True, **kw))
        pieces = [c.choices[0].text for c in chunks if c.choices]
        text = whole.choices[0].text
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 1
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "body, message",
    [
        ("{not json", "not valid JSON"),
        ({"model": "mpg", "messages": []}, "conversation is empty"),
        (
            {"model": "mpg", "messages": [{"role": "user", "content": "a"}], "persona": "EXQ"},
            "unknown persona letter",
        ),
        ({"model": "mpg", "messages": [{"role": "user", "content": "a"}], "persona": "EI"}, "both sides"),
        (
            {"model": "mpg", "messages": [{"role": "user", "content": "a"}], "persona": "E=lots"},
            "not LETTER=NUMBER",
        ),
        (
            {"model": "mpg", "messages": [{"role": "user", "content": "a"}], "max_tokens": 10**6},
            "exceeds this server's limit",
        ),
        ({"model": "mpg-xyz", "messages": [{"role": "user", "content": "a"}]}, "unknown model"),
        ({"model": "mpg", "messages": [{"role": "user", "content": "a"}], "personna": "E"}, "unknown field"),
        ({"model": "mpg", "messages": [{"role": "user", "content": "a"}], "temperature": -1}, "temperature"),
        (
            {"model": "mpg", "messages": [{"role": "user", "content": "a"}], "lam": "x"},
            "lam must be a number",
        ),
        ({"model": "mpg", "messages": [{"role": "user", "content": "  "}]}, "prompt"),
        (
            {"model": "mpg", "messages": [{"role": "assistant", "content": "a"}]},
            "last message must be the user",
        ),
        (
            {
                "model": "mpg",
                "messages": [{"role": "user", "content": "a"}],
                "steer": {"vector": "v", "layer": 0},
            },
            "unknown steering vector",
        ),
        ({"model": "mpg", "messages": [{"role": "user", "content": "a"}], "n": 2}, "not supported"),
    ],
)
def test_bad_requests_get_400_naming_the_problem(server, body, message):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(
        server + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error"


def test_openai_client_sees_400_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError, match="both sides"):
        client.chat.completions.create(
            model="mpg", messages=[{"role": "user", "content": "a"}], extra_body={"persona": "ESNJ"}
        )
    ok = client.chat.completions.create(
        model="mpg", messages=[{"role": "user", "content": "a"}], max_tokens=3
    )
    assert ok.choices[0].message.content is not None


def test_sixteen_concurrent_clients_get_their_offline_texts(client, setup):
    """16 clients at once, 8 personas, their own seeds and lengths: continuous batching changes nothing."""
    types = ["ENTJ", "INTP", "ESFJ", "ISTP", "ENFP", "INFJ", "ESTJ", "ISFP"]
    jobs = [(types[i % 8], "a b" if i % 2 else "b a a", 100 + i, 6 + i) for i in range(16)]

    def ask(job):
        mbti, prompt, seed, n = job
        r = client.chat.completions.create(
            model=f"mpg-{mbti.lower()}",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=n,
            seed=seed,
            extra_body={"ignore_eos": True},
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, jobs))
    for (mbti, prompt, seed, n), text in zip(jobs, got):
        assert text == offline(setup, prompt, seed, n, mbti=mbti, eos_token_id=[]), (mbti, seed)


def running(url) -> int:
    return httpx.get(url + "/health").json()["running"]


def test_a_disconnect_mid_stream_frees_its_rows(server):
    body = {
        "model": "mpg",
        "prompt": "a b",
        "max_tokens": 3500,
        "stream": True,
        "ignore_eos": True,
        "sampler": "fused",
    }
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert running(server) == 1
    deadline = time.monotonic() + 20
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running(server) == 0
    metrics = httpx.get(server + "/metrics").text
    assert "mpg_requests_total" in metrics and "mpg_time_to_first_token_seconds" in metrics


def test_full_queue_gets_429_and_sigterm_finishes_in_flight_work(setup):
    root, _ = setup
    proc, url = start_server(root, "--max-batch", "1", "--max-queue", "1", "--shutdown-timeout", "60")
    long = {"model": "mpg", "prompt": "a b", "max_tokens": 2500, "ignore_eos": True, "sampler": "fused"}
    results = {}

    def first():
        with httpx.stream("POST", url + "/v1/completions", json={**long, "stream": True}, timeout=120) as r:
            results["first"] = [line for line in r.iter_lines() if line.startswith("data:")]

    def queued():
        results["queued"] = httpx.post(url + "/v1/completions", json={**long, "max_tokens": 5}, timeout=120)

    try:
        a = threading.Thread(target=first)
        a.start()
        deadline = time.monotonic() + 30
        while running(url) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        b = threading.Thread(target=queued)
        b.start()
        while httpx.get(url + "/health").json()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        t = time.monotonic()
        full = httpx.post(url + "/v1/completions", json={**long, "max_tokens": 5}, timeout=30)
        assert full.status_code == 429 and time.monotonic() - t < 5
        assert "queue is full" in full.json()["error"]["message"]
        assert running(url) == 1  # the first request was still in flight when SIGTERM came
        proc.send_signal(signal.SIGTERM)
        a.join(90)
        b.join(90)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    last = json.loads(results["first"][-2][5:])  # the final chunk, then [DONE]
    assert results["first"][-1] == "data: [DONE]" and last["choices"][0]["finish_reason"] == "length"
    assert results["queued"].status_code == 200  # accepted before the signal: answered, not lost
    assert results["queued"].json()["usage"]["completion_tokens"] == 5
    assert os.path.exists(root)


def test_sixteen_clients_over_eight_personas_and_mixed_settings(client, setup):
    """One running batch per sampler holds every persona and setting: each client still gets exactly its
    offline text (temperature, top-p, sampler and its knobs are the sequence's own)."""
    types = ["ENTJ", "INTP", "ESFJ", "ISTP", "ENFP", "INFJ", "ESTJ", "ISFP"]
    settings = [
        {"temperature": 1.0, "top_p": 1.0, "sampler": "fused"},
        {"temperature": 0.7, "top_p": 0.9, "sampler": "fused"},
        {"temperature": 1.2, "top_p": 1.0, "sampler": "speculative", "chunk_size": 2},
        {"temperature": 1.0, "top_p": 0.8, "sampler": "speculative", "chunk_size": 4},
        {"temperature": 0.0, "top_p": 1.0, "sampler": "fused"},
        {"temperature": 1.0, "top_p": 1.0, "sampler": "scr", "chunk_size": 3},
    ]
    jobs = [
        (types[i % 8], "a b" if i % 3 else "b a a", 200 + i, 5 + i % 7, settings[i % 6]) for i in range(16)
    ]

    def ask(job):
        mbti, prompt, seed, n, kw = job
        extra = {k: v for k, v in kw.items() if k in ("sampler", "chunk_size")}
        r = client.chat.completions.create(
            model=f"mpg-{mbti.lower()}",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=n,
            seed=seed,
            temperature=kw["temperature"],
            top_p=kw["top_p"],
            extra_body={"ignore_eos": True, **extra},
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, jobs))
    for (mbti, prompt, seed, n, kw), text in zip(jobs, got):
        assert text == offline(setup, prompt, seed, n, mbti=mbti, eos_token_id=[], **kw), (mbti, seed, kw)


def test_a_multi_turn_chat_is_the_offline_text_of_the_same_conversation(client, setup):
    from mpg.chat import Conversation

    messages = [
        {"role": "system", "content": "b a"},
        {"role": "user", "content": "a b"},
        {"role": "assistant", "content": "b b a"},
        {"role": "user", "content": "a a"},
    ]
    r = client.chat.completions.create(model="mpg-infj", messages=messages, max_tokens=10, seed=4)
    conv = Conversation((("system", "b a"), ("user", "a b"), ("assistant", "b b a")), "a a")
    assert r.choices[0].message.content == offline(setup, conv, 4, 10, mbti="INFJ")
    single = client.chat.completions.create(
        model="mpg-infj", messages=[{"role": "user", "content": "a a"}], max_tokens=10, seed=4
    )
    assert r.usage.prompt_tokens > single.usage.prompt_tokens  # the history is in the context


def test_a_wave_joining_mid_stream_changes_no_running_text(client, setup, server):
    """A long streamed answer is under way when eight requests of other personas arrive at once: their
    prefill runs between its steps, and its text is still its offline text."""
    body = {
        "model": "mpg-estp",
        "prompt": "a b",
        "max_tokens": 60,
        "seed": 9,
        "stream": True,
        "ignore_eos": True,
    }
    lines = []
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=120) as r:
        it = r.iter_lines()
        lines.append(next(line for line in it if line.startswith("data:")))

        def wave(i):
            return (
                client.completions.create(
                    model=f"mpg-{['isfj', 'enfp', 'intj', 'esfp'][i % 4]}",
                    prompt="b" if i % 2 else "a a b",
                    max_tokens=8,
                    seed=30 + i,
                )
                .choices[0]
                .text
            )

        with ThreadPoolExecutor(8) as pool:
            waves = list(pool.map(wave, range(8)))
        lines += [line for line in it if line.startswith("data:")]
    chunks = [json.loads(line[5:]) for line in lines if line != "data: [DONE]"]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == offline(setup, "a b", 9, 60, mbti="ESTP", eos_token_id=[])
    assert all(isinstance(w, str) for w in waves)


def test_the_merged_adapter_cache_evicts_and_reloads_without_changing_outputs(setup):
    """proposal="merged" is served: the worker builds each persona's summed adapter between steps and
    keeps at most --max-merged-adapters of them; one evicted and built again gives the same text."""
    root, engine = setup
    proc, url = start_server(root, "--max-merged-adapters", "1")
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)

        def ask(mbti):
            r = c.completions.create(
                model="mpg",
                prompt="a b",
                max_tokens=8,
                seed=3,
                extra_body={
                    "persona": mbti,
                    "sampler": "speculative",
                    "proposal": "merged",
                    "ignore_eos": True,
                    "composition": TRAIT_RATIO,  # the default's, named: a request may carry one
                },
            )
            return r.choices[0].text, httpx.get(url + "/health").json()["merged_adapters"]

        # a merge sums the letters' axis adapters by weight (the side lives in the contexts): two
        # personas with other weights need two adapters
        first, loaded_first = ask("ENTJ")
        other, loaded_other = ask("E=1,N=0.5")
        again, loaded_again = ask("ENTJ")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert len(loaded_first) == len(loaded_other) == len(loaded_again) == 1
    assert loaded_first != loaded_other and loaded_again == loaded_first  # evicted, then built again
    assert first == again
    for mbti, text in (("ENTJ", first), ("E=1,N=0.5", other)):
        want = offline(
            setup,
            "a b",
            3,
            8,
            mbti=mbti,
            sampler="speculative",
            proposal="merged",
            eos_token_id=[],
            composition=TRAIT_RATIO,
        )
        assert text == want, mbti


def test_a_merge_that_cancels_is_a_400(client):
    """Under ratio=opposite an axis's two sides share one adapter, so their deltas cancel in a merge."""
    body = {"persona": "ENTJ", "proposal": "merged", "composition": "product,lam=1,ratio=opposite"}
    with pytest.raises(openai.BadRequestError, match="adds nothing"):
        client.completions.create(model="mpg", prompt="a b", max_tokens=2, extra_body=body)
    with pytest.raises(openai.BadRequestError, match="unknown ratio"):
        client.completions.create(
            model="mpg",
            prompt="a b",
            max_tokens=2,
            extra_body={"persona": "ENTJ", "composition": "product,ratio=x"},
        )


def test_no_request_body_gets_a_500_and_the_server_keeps_answering(server):
    """Generated bodies (wrong types, NaN and infinite numbers, huge, empty and unicode strings, unknown
    and missing fields) on both routes: every answer is a 400 naming a field, or a 200."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=30)
        | st.sampled_from(
            ["", " ", "a b", "ENTJ", "E=nan", "E=inf", "x" * 20_000, "\u00e9\U0001f600", "\x00"]
        )
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )
    fields = st.sampled_from(
        [
            "model",
            "messages",
            "prompt",
            "max_tokens",
            "temperature",
            "top_p",
            "seed",
            "stop",
            "stream",
            "n",
            "persona",
            "profile",
            "personality",
            "traits",
            "aggregator",
            "lam",
            "sampler",
            "chunk_size",
            "proposal",
            "steer",
            "ignore_eos",
            "max_completion_tokens",
            "logprobs",
            "mystery",
        ]
    )
    base = {"model": "mpg", "max_tokens": 2, "ignore_eos": True}
    statuses = []

    @hypothesis.settings(
        max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck)
    )
    @hypothesis.given(
        kind=st.sampled_from(["chat", "completion"]),
        changes=st.dictionaries(fields, values, max_size=4),
        drop=st.lists(st.sampled_from(["model", "messages", "prompt", "max_tokens"]), max_size=2),
    )
    def one(kind, changes, drop):
        body = dict(
            base,
            **({"messages": [{"role": "user", "content": "a b"}]} if kind == "chat" else {"prompt": "a b"}),
        )
        body.update(changes)
        for k in drop:
            body.pop(k, None)
        route = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        if body.get("stream") is True:
            body["stream"] = False  # a streamed answer's status is sent before generation: same checks
        r = httpx.post(
            server + route,
            content=json.dumps(body),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        statuses.append(r.status_code)
        assert r.status_code in (200, 400), (r.status_code, body, r.text[:300])
        if r.status_code == 400:
            assert r.json()["error"]["message"]

    one()
    assert 200 in statuses and 400 in statuses
    ok = httpx.post(
        server + "/v1/completions", json={"model": "mpg", "prompt": "a b", "max_tokens": 2}, timeout=60
    )
    assert ok.status_code == 200


def test_serve_load_benchmark_on_the_tiny_model(setup, tmp_path):
    """benchmarks/record/serve_load.py, reduced: two levels, one of them again beside a competing process,
    and a short soak; its JSON says what it measured."""
    from benchmarks.record import serve_load

    root, _ = setup
    out = tmp_path / "load"
    argv = ["--base", str(root / "base"), "--experts", str(root / "experts"), "--levels", "1,2"]
    argv += ["--requests", "2", "--max-tokens", "4", "--compete-levels", "2", "--soak-seconds", "4"]
    serve_load.main([*argv, "--soak-concurrency", "2", "--out", str(out)])
    result = json.loads((out / "serve_load.json").read_text())
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    assert all(lv["errors"] == 0 and lv["completion_tokens"] > 0 for lv in result["levels"])
    (busy,) = result["busy"]
    assert busy["concurrency"] == 2 and busy["errors"] == 0 and busy["busy_over_idle"] > 0
    assert result["soak"]["errors"] == 0 and result["soak"]["rss_max_mib"] > 0
    assert result["server_exit_code"] == 0 and (out / "serve_load.md").exists()


def test_proposal_head_is_served_beside_anchor_drafts(setup):
    """proposal="head" drafts with the server's draft head; sequences drafted by the head and by the
    anchor run side by side (batches of their own), and each text is its offline text."""
    from mpg.draft_head import DraftHead, DraftHeadConfig

    root, engine = setup
    head = DraftHead.fresh(DraftHeadConfig.for_base(engine.models["base"]), seed=5)
    head.save(root / "head", dtype=torch.float32)
    proc, url = start_server(root, "--draft-head", str(root / "head"))
    jobs = [("ENTJ", "speculative", "head", 11), ("INFP", "speculative", "anchor", 12)]
    jobs += [("ESTP", "scr", "head", 13), ("ISFJ", "speculative", "head", 14)]
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)

        def ask(job):
            mbti, sampler, proposal, seed = job
            r = c.completions.create(
                model="mpg",
                prompt="a b",
                max_tokens=12,
                seed=seed,
                extra_body={"persona": mbti, "sampler": sampler, "proposal": proposal, "ignore_eos": True},
            )
            return r.choices[0].text

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(ask, jobs))
        bad = httpx.post(url + "/v1/completions", json={"model": "mpg", "prompt": "a", "proposal": "heads"})
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert bad.status_code == 400 and "proposal" in bad.text
    engine.set_draft_head(DraftHead.fresh(DraftHeadConfig.for_base(engine.models["base"]), seed=5))
    try:
        for (mbti, sampler, proposal, seed), text in zip(jobs, got):
            want = offline(
                setup, "a b", seed, 12, mbti=mbti, sampler=sampler, proposal=proposal, eos_token_id=[]
            )
            assert text == want, (mbti, proposal)
    finally:
        engine.set_draft_head(None)
