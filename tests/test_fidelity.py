"""Judges (expert-independent training data, logistic regression, role-play cleaning), text metrics,
free-form items, and a reduced end-to-end run of benchmarks/record/fidelity.py on a tiny random model with
judges trained on synthetic texts (hash embedder): no ../shared/data needed."""

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch

from mpg.composition import Composition
from mpg.eval.judge import (
    MbtiJudge,
    clean_roleplay_answer,
    clean_roleplay_pairs,
    expert_subset,
    fit_logistic,
    load_or_train_judges,
    roleplay_fields,
    unseen_train_rows,
)
from mpg.eval.text_metrics import distinct_n, distinct_summary, ppl_summary
from mpg.stats import proportion

ROOT = Path(__file__).resolve().parent.parent

# ---- synthetic data in the layout of ../shared/data ---------------------------------------------
STYLE = {
    "E": "party friends talk crowd chatting",
    "I": "quiet alone reflect solitude silence",
    "S": "fact detail practical concrete measured",
    "N": "imagine pattern possibility abstract dream",
    "T": "logic analysis objective reason proof",
    "F": "feel empathy warm values caring",
    "J": "plan schedule organised decide deadline",
    "P": "flexible spontaneous open adapt improvise",
}
CONTENT = "garden river city music book travel kitchen window mountain letter bicycle market winter".split()
PROFILES = {
    "painter": "paint canvas gallery colour brush",
    "firefighter": "fire rescue truck hose alarm",
    "baker": "bread oven dough flour pastry",
    "surfer": "wave board ocean beach tide",
    "nurse": "patient ward shift clinic care",
    "pilot": "flight cockpit runway cloud altitude",
}
MOODS = {
    "cheerful": "haha wonderful yay amazing",
    "calm": "gently peaceful steady slowly",
    "curious": "wonder why discover question",
}
GENERIC = "okay thing stuff maybe weather whatever anyway sure".split()
RP_PROMPT = (
    "Your task is to play the role of a person with the following profile and personalities traits:\n"
    "Profile: {profile}\nPersonalities: {personality}\nPlease ignore the gender pronouns.\n"
)


def _mbti_rows(axis: str, n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        side = axis[i % 2]
        other = axis[1 - i % 2]
        content = rng.sample(CONTENT, 5)
        instruction = f"Write about {' '.join(content[:2])} number {i}."

        def answer(letter, content=content):
            w = content + rng.sample(STYLE[letter].split(), 3)
            rng.shuffle(w)
            return " ".join(w)

        rows.append(
            {
                "prompt": f"Now you are the '{side}' person. Please answer the questions:{instruction}",
                "side": side,
                "instruction": instruction,
                "chosen": answer(side),
                "rejected": answer(other),
            }
        )
    return rows


def _roleplay_rows(n: int, rng: random.Random, leak: bool) -> list[dict]:
    rows = []
    for i in range(n):
        job, mood = rng.choice(list(PROFILES)), rng.choice(list(MOODS))
        profile, personality = f"She is a {job} number {i}.", f"She is {mood}."
        chosen = " ".join(
            rng.sample(PROFILES[job].split(), 3) + rng.sample(MOODS[mood].split(), 2) + [str(i)]
        )
        rejected = " ".join(rng.sample(GENERIC, 4) + [str(i)])
        if (
            leak and i % 3 == 0
        ):  # the data's leaked scaffolding: the chosen answer, then the real rejected one
            rejected = f'User Message: {chosen}  \n\nModified Response: "{rejected}"'
        rows.append(
            {
                "prompt": RP_PROMPT.format(profile=profile, personality=personality),
                "chosen": chosen,
                "rejected": rejected,
            }
        )
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_synthetic_data(root: Path, train: int = 200, test: int = 30) -> Path:
    rng = random.Random(0)
    for axis, d in (("EI", "e_i"), ("SN", "s_n"), ("TF", "t_f"), ("JP", "j_p")):
        _write_jsonl(root / f"mbti/prefs/{d}/train.jsonl", _mbti_rows(axis, train, rng))
        _write_jsonl(root / f"mbti/prefs/{d}/test.jsonl", _mbti_rows(axis, test, rng))
    _write_jsonl(
        root / "mbti/qa_ENTJ.jsonl",
        [
            {
                "instruction": f"Describe your {w}.",
                "reference": " ".join(STYLE["E"].split()[:2] + STYLE["N"].split()[:2] + [w]),
            }
            for w in ("traits", "weekend", "work")
        ],
    )
    for d in ("personality", "profile"):
        _write_jsonl(root / f"roleplay/prefs/{d}/train.jsonl", _roleplay_rows(train, rng, leak=True))
        _write_jsonl(root / f"roleplay/prefs/{d}/test.jsonl", _roleplay_rows(test, rng, leak=True))
    _write_jsonl(
        root / "roleplay/test.jsonl",
        [
            {"profile": f"He is a {job}.", "personality": "He is calm.", "reference_answer": PROFILES[job]}
            for job in ("baker", "pilot", "nurse")
        ],
    )
    items = [
        {
            "id": i + 1,
            "question": f"Do you like {w}?",
            "statement": f"You like {w}",
            "dimension": dim,
            "keyed": dim[i % 2 == 1 and 2 or 0],
        }
        for i, (w, dim) in enumerate(
            [
                ("parties", "E/I"),
                ("silence", "E/I"),
                ("facts", "S/N"),
                ("dreams", "S/N"),
                ("logic", "T/F"),
                ("feelings", "T/F"),
                ("plans", "J/P"),
                ("surprises", "J/P"),
            ]
        )
    ]
    (root / "mbti/questionnaire_16p.json").write_text(json.dumps(items, indent=1))
    for name in ("mbti_e_i", "mbti_s_n", "mbti_t_f", "mbti_j_p", "roleplay_personality", "roleplay_profile"):
        # which pairs the (imagined) experts trained on: the judges train on the others
        (root / "experts" / name).mkdir(parents=True, exist_ok=True)
        settings = {"max_train": 160, "seed": 0}
        (root / "experts" / name / "metrics.json").write_text(json.dumps({"settings": settings}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def judges(data, tmp_path_factory):
    return load_or_train_judges(
        data, tmp_path_factory.mktemp("judges"), embedder="hash256", progress=False, experts=data / "experts"
    )


# ---- judge logic ----------------------------------------------------------------------------------
def test_unseen_train_rows_excludes_exactly_the_expert_subset(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(200)]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    expert = sorted(
        random.Random(0).sample(range(200), 160)
    )  # mpg.training.train_expert(max_train=160, seed=0)
    assert expert_subset(200, 160, 0) == expert
    unseen = unseen_train_rows(tmp_path / "train.jsonl", 160, 0)
    assert [r["prompt"] for r in unseen] == [f"p{i}" for i in range(200) if i not in set(expert)]
    assert len(unseen) == 40
    assert unseen_train_rows(tmp_path / "train.jsonl", max_train=200, seed=0) == []  # all seen: none unseen
    assert unseen_train_rows(tmp_path / "train.jsonl", max_train=None, seed=0) == []  # None: all pairs
    assert len(unseen_train_rows(tmp_path / "train.jsonl", 160, seed=1)) == 40
    assert unseen_train_rows(tmp_path / "train.jsonl", 160, seed=1) != unseen


def test_unseen_rows_follow_each_experts_metrics(data):
    from mpg.eval.judge import trained_subset

    train = data / "mbti/prefs/s_n/train.jsonl"
    experts = data.parent / "other_experts"
    (experts / "mbti_s_n").mkdir(parents=True)
    (experts / "mbti_s_n" / "metrics.json").write_text(
        json.dumps({"settings": {"max_train": 120, "seed": 3}})
    )
    assert trained_subset(train, experts) == (120, 3)
    assert len(unseen_train_rows(train, experts=experts)) == 80
    assert len(unseen_train_rows(train, experts=data / "experts")) == 40
    with pytest.raises(FileNotFoundError, match="mbti_e_i has no metrics.json"):
        trained_subset(data / "mbti/prefs/e_i/train.jsonl", experts)


def test_shipped_experts_leave_pairs_for_the_judges():
    from mpg.personas import AXIS_ADAPTERS, ROLEPLAY_ADAPTERS, SHIPPED_EXPERTS

    for name in [*AXIS_ADAPTERS.values(), *ROLEPLAY_ADAPTERS]:
        path = SHIPPED_EXPERTS / name / "metrics.json"
        assert path.is_file(), f"shipped expert {name} has no metrics.json"
        record = json.loads(path.read_text())
        max_train = record["settings"]["max_train"]
        assert max_train, f"{name} trained on every pair: no unseen pairs are left for its judge"
        assert record["metrics"]["train_pairs"] == max_train, name


def test_fit_logistic_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)  # [N, D]
    y = (x[:, 0] - 0.5 * x[:, 3] > 0).float()  # [N]
    model = fit_logistic(x[:150], y[:150], l2=1e-3)
    acc = float(((model.proba(x[150:]) > 0.5).float() == y[150:]).float().mean())
    assert acc >= 0.96
    again = fit_logistic(x[:150], y[:150], l2=1e-3)  # deterministic
    assert torch.equal(model.weight, again.weight)
    with pytest.raises(ValueError, match="x \\[N, D\\]"):
        fit_logistic(x, y[:3], 1.0)


def test_mbti_judge_learns_synthetic_styles_held_out(judges):
    mbti, _ = judges
    for axis, r in mbti.report.items():
        assert r["train_pairs"] == 40  # 200 rows minus the 160 the expert saw
        assert r["held_out"]["n"] == 60 and r["held_out"]["accuracy"] >= 0.9, (axis, r["held_out"])
    p = mbti.predict_proba([" ".join([STYLE["E"], STYLE["N"], STYLE["T"], STYLE["J"]]), ""])  # [2, 4]
    assert p.shape == (2, 4) and bool(((p >= 0) & (p <= 1)).all())
    assert mbti.letters(
        [
            " ".join([STYLE["E"], STYLE["N"], STYLE["T"], STYLE["J"]]),
            " ".join([STYLE["I"], STYLE["S"], STYLE["F"], STYLE["P"]]),
        ]
    ) == ["ENTJ", "ISFP"]


def test_roleplay_judge_learns_synthetic_personas_held_out(judges):
    _, rp = judges
    assert rp.report["held_out"]["accuracy"] >= 0.9 and rp.report["held_out_pairs"]["accuracy"] >= 0.95
    s = rp.score(
        ["paint canvas gallery haha wonderful", "okay stuff maybe weather"],
        ["She is a painter.", "She is a painter."],
        ["She is cheerful.", "She is cheerful."],
    )
    assert s.shape == (2,) and float(s[0]) > 0.5 > float(s[1])
    with pytest.raises(ValueError, match="2 answers, 1 profiles"):
        rp.score(["a", "b"], ["p"], ["q", "r"])


def test_judges_are_cached_by_fingerprint(data, judges, tmp_path):
    mbti, rp = load_or_train_judges(
        data, tmp_path, embedder="hash256", progress=False, experts=data / "experts"
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 and any(f.startswith("mbti-") and f.endswith(".safetensors") for f in files)
    texts = ["party friends logic plan", "quiet dream feel open"]
    again, rp2 = load_or_train_judges(
        data, tmp_path, embedder="hash256", progress=False, experts=data / "experts"
    )  # loaded, not trained
    assert torch.allclose(again.predict_proba(texts), mbti.predict_proba(texts), atol=1e-6)
    assert again.report == json.loads(json.dumps(mbti.report))
    args = (["bread oven"], ["He is a baker."], ["He is calm."])
    assert torch.allclose(rp2.score(*args), rp.score(*args), atol=1e-6)
    with pytest.raises(ValueError, match="not an MBTI judge"):
        MbtiJudge.load(
            tmp_path
            / next(f for f in files if f.startswith("roleplay-"))
            .removesuffix(".json")
            .removesuffix(".safetensors")
        )


def test_clean_roleplay_answer_strips_leaked_scaffolding():
    assert clean_roleplay_answer("  Plain answer. Do you surf?  ") == "Plain answer. Do you surf?"
    leaked = 'User Message: I love surfing!  \n\nModified Response: "Surfing is nice. What do you like?"'
    assert clean_roleplay_answer(leaked) == "Surfing is nice. What do you like?"
    assert clean_roleplay_answer("User Message: Hi there!\nResponse: Not much, you?") == "Not much, you?"
    assert clean_roleplay_answer('"First version."  \n\n(Modified response):  \n"Second."') == "Second."
    assert clean_roleplay_answer('"A quoted one."\n\n"Another quoted one."') == "Another quoted one."
    assert clean_roleplay_answer("Fine as is.\n\n(No modifications were needed.)") == "Fine as is."
    assert (
        clean_roleplay_answer("User Message: x\nPersonalities: She is kind.\n\nModified User Message: y")
        == "y"
    )
    prompt = RP_PROMPT.format(profile="She is a nurse.", personality="She is calm.")
    assert roleplay_fields(prompt) == ("She is a nurse.", "She is calm.")
    with pytest.raises(ValueError, match="not a role-play prompt"):
        roleplay_fields("hello")
    pairs = clean_roleplay_pairs(
        [
            {"prompt": prompt, "chosen": "ok", "rejected": "User Message: ok"},
            {"prompt": prompt, "chosen": "ok", "rejected": "User Message: ok\nResponse: no"},
        ]
    )
    assert [p["rejected"] for p in pairs] == ["no"]  # nothing distinct left: pair dropped


# ---- text metrics ---------------------------------------------------------------------------------
def test_distinct_n_and_intervals():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4) and distinct_n(["a b a b"], 2) == pytest.approx(
        2 / 3
    )
    assert distinct_n(["x y", "x y"], 1) == pytest.approx(0.5)  # repetition across answers counts
    assert math.isnan(distinct_n([""], 2))
    s = distinct_summary(["x y", "x y"])
    assert s["distinct_1_per_answer"]["mean"] == pytest.approx(1.0) and s["distinct_2"] == pytest.approx(0.5)
    p = proportion([True, True, False, True])
    assert p["mean"] == 0.75 and p["lo"] < 0.75 < p["hi"] and p["n"] == 4
    assert proportion([])["mean"] is None
    ppl = ppl_summary([(2.0, 10), (8.0, 30), (float("nan"), 0)])
    assert ppl["ppl"] == pytest.approx(math.exp((10 * math.log(2) + 30 * math.log(8)) / 40))
    assert ppl["mean"] == pytest.approx(4.0) and ppl["n"] == 2 and ppl["lo"] < 4 < ppl["hi"]


def test_mbti_items_alternate_qa_and_shared_prefs_instructions(data):
    from mpg.eval.freeform import mbti_items, prefs_instructions

    items = mbti_items(data, ["ENTJ", "INFP"], 4)
    entj, infp = [i for i in items if i.mbti_type == "ENTJ"], [i for i in items if i.mbti_type == "INFP"]
    assert [i.source for i in entj] == ["qa_ENTJ", "prefs_e_i", "qa_ENTJ", "prefs_s_n"]
    assert all(i.reference for i in entj if i.source == "qa_ENTJ") and all(i.reference is None for i in infp)
    pool = [p for p, _ in prefs_instructions(data)]
    assert [i.prompt for i in infp] == pool[:4]  # the same instructions for every type
    assert entj[1].prompt == infp[0].prompt
    with pytest.raises(ValueError, match="four-letter"):
        mbti_items(data, ["EN"], 1)
    # skip: the later part of the same lists, same ids (held-out items for a comparison after a choice)
    later = mbti_items(data, ["ENTJ", "INFP"], 2, skip=2)
    assert later == [i for i in items if int(i.id.split("-")[1]) >= 2]


# ---- the benchmark end to end on a tiny model --------------------------------------------------------
def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "fidelity_benchmark", ROOT / "benchmarks" / "record" / "fidelity.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_engine(tokenizer):
    from tiny import add_lora, tiny_model

    from mpg.engine import Engine

    eng = Engine(add_lora(tiny_model(seed=0), ["x", "y"], alpha=8), tokenizer)
    eng.adapters["base"] |= {"x", "y"}
    return eng


def _tiny_experts():
    """Stand-ins for the shipped experts on the tiny model: adapter x for E/S/T/J, y for the rest."""
    from mpg import Attribute, Policy

    def mbti(letter):
        return Attribute.expert("x" if letter in "ESTJ" else "y", f"You are {letter}.", name=letter)

    def roleplay(profile, personality):
        template = f"{profile} {personality} {{prompt}}"
        return (
            [
                Attribute.expert("x", None, name="personality", template=template),
                Attribute.expert("y", None, name="profile", template=template),
            ],
            Policy(template=template),
        )

    return mbti, roleplay


def _in_unit(ci):
    return ci["mean"] is None or 0.0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1.0


def test_benchmark_end_to_end_on_tiny_model(tmp_path, tokenizer, data, judges):
    pytest.importorskip("matplotlib")
    from mpg.eval.methods import MBTI_METHODS, ROLEPLAY_METHODS

    bench = _load_benchmark()
    mbti_experts, rp_experts = _tiny_experts()
    out = tmp_path / "out"
    argv = [
        "--data",
        str(data),
        "--out",
        str(out),
        "--types",
        "ENTJ,INFP",
        "--items",
        "8",
        "--freeform-types",
        "ENTJ,INFP",
        "--freeform-per-type",
        "2",
        "--roleplay",
        "2",
        "--max-new-tokens",
        "4",
        "--vectors",
        str(tmp_path / "vectors"),
        "--extract-samples",
        "1",
        "--extract-max-new-tokens",
        "2",
        "--embedder",
        "hash256",
        "--no-progress",
    ]
    rc = bench.main(
        argv, engine=_tiny_engine(tokenizer), experts=mbti_experts, roleplay_experts=rp_experts, judges=judges
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert (
        res["command"].startswith("benchmarks/record/fidelity.py --data") and res["machine"]["cpu_count"] >= 1
    )
    assert {"platform", "torch"} <= set(res["machine"]) and res["config"]["layer"] == 1
    q, f, r = (res["parts"][p] for p in ("questionnaire", "freeform", "roleplay"))
    assert set(q["methods"]) == set(MBTI_METHODS) and q["types"] == ["ENTJ", "INFP"]
    assert set(f["methods"]) == set(MBTI_METHODS) | {"reference"} and set(r["methods"]) == set(
        ROLEPLAY_METHODS
    ) | {"reference"}
    assert len(f["answers"]) == 4 * len(MBTI_METHODS) and len(r["answers"]) == 2 * len(ROLEPLAY_METHODS)
    for m, s in f["methods"].items():
        assert all(_in_unit(s[k]) for k in ("E/I", "S/N", "T/F", "J/P", "type", "p_target")), m
        if m != "reference":
            assert s["answers"] == 4 and s["ppl"]["ppl"] is None or s["ppl"]["ppl"] >= 1.0
            assert s["tokens_per_s"] > 0
    assert f["methods"]["reference"]["answers"] == 1  # one qa_ENTJ item with its reference
    rp_score = {(a["method"], a["id"]): a["judge_score"] for a in r["answers"]}
    for m, s in r["methods"].items():
        assert _in_unit(s["judge_score"]), m
        if m not in ("base", "reference"):  # paired to the role-play prompt alone, profile by profile
            ids = [a["id"] for a in r["answers"] if a["method"] == m]
            diff = sum(rp_score[(m, i)] - rp_score[("base", i)] for i in ids) / len(ids)
            assert s["vs_base"]["n"] == 2 and s["vs_base"]["mean"] == pytest.approx(diff), m
    # the same prompts and seeds for every method: per item, only the method changes
    prompts = {m: [a["prompt"] for a in f["answers"] if a["method"] == m] for m in MBTI_METHODS}
    assert len({tuple(p) for p in prompts.values()}) == 1
    assert all(0 <= a["judge_p_first"][0] <= 1 and len(a["judged_type"]) == 4 for a in f["answers"])
    table = (out / "table.md").read_text()
    assert "| fused_mixture |" in table and "| billy |" in table and "held-out accuracy" in table
    assert (out / "plot.png").stat().st_size > 0
    assert (tmp_path / "vectors.safetensors").exists()  # billy's vectors extracted on the fly


def test_benchmark_no_billy_and_bad_options(tmp_path, tokenizer, data, judges):
    pytest.importorskip("matplotlib")
    bench = _load_benchmark()
    mbti_experts, rp_experts = _tiny_experts()
    out = tmp_path / "out"
    rc = bench.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--parts",
            "freeform",
            "--methods",
            "base,prompt,billy,compose:product,lam=0.5,anchor=prompt,scr_k2",
            "--freeform-types",
            "ISFJ",
            "--freeform-per-type",
            "1",
            "--max-new-tokens",
            "3",
            "--no-billy",
            "--no-progress",
        ],
        engine=_tiny_engine(tokenizer),
        experts=mbti_experts,
        roleplay_experts=rp_experts,
        judges=judges,
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    compose = "compose:product,lam=0.5,weights=given,anchor=prompt"  # commas kept in it; canonical name
    methods = res["parts"]["freeform"]["methods"]
    assert set(res["parts"]) == {"freeform"} and set(methods) == {"base", "prompt", compose, "scr_k2"}
    for m in ("base", compose, "scr_k2"):  # paired with prompt on the one (type, question, seed) item
        vs = methods[m]["vs_prompt"]
        assert vs["n"] == 1 and vs["lo"] <= vs["mean"] <= vs["hi"]
        assert vs["mean"] == pytest.approx(
            methods[m]["mean_axis"]["mean"] - methods["prompt"]["mean_axis"]["mean"]
        )
    assert "vs_prompt" not in methods["prompt"]
    for bad in (
        ["--methods", "nope"],
        ["--methods", "compose:product,lam=x"],
        ["--types", "ENTX"],
        ["--freeform-types", "EENJ"],
        ["--items", "0"],
    ):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_answers_sampled_elsewhere_score_like_answers_sampled_here(tmp_path, tokenizer, data, judges):
    """--generate-only writes the answers without judges; --answers scores them exactly as a run that
    samples them itself, and refuses a file sampled with other settings or lacking an answer."""
    pytest.importorskip("matplotlib")
    bench = _load_benchmark()
    mbti_experts, rp_experts = _tiny_experts()
    common = [
        "--data",
        str(data),
        "--parts",
        "freeform,roleplay",
        "--methods",
        "base,prompt,fused_product,expert_personality",
    ]
    common += ["--freeform-types", "ENTJ,ISFP", "--freeform-per-type", "1", "--roleplay", "1"]
    common += ["--max-new-tokens", "3", "--no-progress"]

    def run(out, *extra, judges=judges):
        argv = [*common, "--out", str(tmp_path / out), *extra]
        kw = dict(engine=_tiny_engine(tokenizer), experts=mbti_experts, roleplay_experts=rp_experts)
        return bench.main(argv, judges=judges, **kw)

    assert run("sampled", "--generate-only", judges=None) == 0  # no judges needed, none trained
    saved = tmp_path / "sampled" / "answers.json"
    assert not (tmp_path / "sampled" / "results.json").exists()
    assert run("here") == 0 and run("scored", "--answers", f"{saved},{saved}") == 0
    here, scored = (json.loads((tmp_path / o / "results.json").read_text()) for o in ("here", "scored"))
    clocks = ("wall_time_s", "tokens_per_s")  # measured per run; the scored run keeps the sampler's

    def scores(res, part):
        return {
            m: {k: v for k, v in s.items() if k not in clocks}
            for m, s in res["parts"][part]["methods"].items()
        }

    for part in ("freeform", "roleplay"):
        texts = [a["text"] for a in json.loads(saved.read_text())["parts"][part]["answers"]]
        assert texts == [a["text"] for a in here["parts"][part]["answers"]], part  # same seeds, same text
        assert scores(here, part) == scores(scored, part), part
    assert [a["file"] for a in scored["answers_from"]] == [str(saved)] * 2  # a comma list of files
    with pytest.raises(SystemExit, match="not a readable answers file"):
        run("missing", "--answers", str(tmp_path / "nowhere.json"))
    with pytest.raises(SystemExit, match="other settings"):
        run("other", "--answers", str(saved), "--seed", "1")
    with pytest.raises(SystemExit, match="lacks 2 of the 8 freeform answers"):
        run("more", "--answers", str(saved), "--methods", "base,prompt,fused_product,fused_mixture")


def test_frontier_benchmark_on_tiny_model(tmp_path, tokenizer, data, judges):
    """benchmarks/record/frontier.py, reduced: two types x 2 items, 3 tokens, a 2 x 2 x 3 x 2 grid (aggregator x
    plausibility x weight rule x anchor, one lam) and BILLY."""
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "frontier_benchmark", ROOT / "benchmarks" / "record" / "frontier.py"
    )
    frontier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frontier)
    mbti, _ = _tiny_experts()
    mbti.spreads = {c: 1.0 + 0.5 * i for i, c in enumerate("ESTJINFP")}
    out = tmp_path / "frontier"
    argv = ["--data", str(data), "--out", str(out), "--types", "ENTJ,ISFP", "--per-type", "2"]
    argv += ["--max-new-tokens", "3", "--lams", "1", "--plausibilities", "0,0.3"]
    argv += ["--weights", "given,sum1,spread", "--alphas", "1"]
    argv += [
        "--vectors",
        str(tmp_path / "vectors"),
        "--extract-samples",
        "1",
        "--extract-max-new-tokens",
        "2",
    ]
    argv += ["--embedder", "hash256", "--no-progress"]
    assert frontier.main(argv, engine=_tiny_engine(tokenizer), experts=mbti, judges=judges) == 0
    results = json.loads((out / "results.json").read_text())
    points = results["points"]
    # product: 2 plausibilities x 3 rules x 2 anchors; mixture: sum1 coincides with given -> 2 x 2 x 2
    composed = [m for m in points if m.startswith("compose:")]
    assert len(composed) == 12 + 8 and {"base", "prompt", "billy:alpha=1"} <= set(points)
    assert len([m for m in composed if m.endswith(",plausibility=0.3")]) == 10
    for p in points.values():
        assert p["answers"] == 4 and _in_unit(p["fidelity"]) and p["ppl"]["mean"] > 0
    assert points["base"]["ppl_ratio_to_base"] == pytest.approx(1.0)
    limit = points["prompt"]["ppl"]["mean"] * 1.5
    ok = [m for m in composed if points[m]["ppl"]["mean"] <= limit]
    if ok:
        assert results["chosen"] == max(ok, key=lambda m: points[m]["fidelity"]["mean"])
    else:
        assert results["chosen"] is None
    assert (out / "frontier.png").stat().st_size > 0 and "fidelity" in (out / "table.md").read_text()
    # sampled elsewhere (--generate-only, no judges), scored here (--answers): the same points
    sampled = tmp_path / "sampled"
    assert (
        frontier.main(
            [*argv[:3], str(sampled), *argv[4:], "--generate-only"],
            engine=_tiny_engine(tokenizer),
            experts=mbti,
        )
        == 0
    )
    rescored = tmp_path / "rescored"
    argv_scored = [*argv[:3], str(rescored), *argv[4:], "--answers", str(sampled / "answers.json")]
    assert frontier.main(argv_scored, engine=_tiny_engine(tokenizer), experts=mbti, judges=judges) == 0
    again = json.loads((rescored / "results.json").read_text())["points"]
    assert {m: p["fidelity"] for m, p in again.items()} == {m: p["fidelity"] for m, p in points.items()}


def test_style_test_asks_held_out_pairs_with_their_two_answers(data, tokenizer):
    from mpg.eval.questionnaire import run_questionnaire, style_items

    items = style_items(data, 2)
    assert len(items) == 8 and [it["keyed"] for it in items[:2]] == ["E", "I"]  # sides alternate
    assert all(len(it["options"]) == 2 and it["prompt"] for it in items)
    mbti, _ = _tiny_experts()
    res = run_questionnaire(
        _tiny_engine(tokenizer),
        ["prompt", "expert_EI"],
        ["ENTJ", "ISFP"],
        items,
        experts=mbti,
        progress=False,
    )
    assert res["item_kind"] == "style"
    for m in ("prompt", "expert_EI"):
        cal = res["methods"][m]["calibrated"]["per_axis"]
        assert set(cal) == {"EI", "SN", "TF", "JP"} and all(v["n"] == 4 for v in cal.values())
    assert [it["id"] for it in res["items"]] == [it["id"] for it in items] and len(
        res["scores"]["prompt"]
    ) == 2
    with pytest.raises(ValueError, match="per_axis must be >= 1"):
        style_items(data, 0)


def test_axes_benchmark_on_tiny_model(tmp_path, tokenizer, data, judges):
    """benchmarks/record/axes.py, reduced: two opposite types x 2 items, 3 tokens; each axis's expert alone, a
    composition of that one attribute, and of all four, for two compositions; sampled elsewhere and
    scored here gives the same figures."""
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "axes_benchmark", ROOT / "benchmarks" / "record" / "axes.py"
    )
    axes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(axes)
    mbti, _ = _tiny_experts()
    comps = ["product,lam=1,plausibility=0.3", "product,lam=1,ratio=anchor"]
    argv = ["--data", str(data), "--types", "ENTJ,ISFP", "--per-type", "2", "--skip", "0"]
    argv += [
        "--max-new-tokens",
        "3",
        "--compositions",
        ";".join(comps),
        "--embedder",
        "hash256",
        "--no-progress",
    ]
    out = tmp_path / "axes"
    assert (
        axes.main([*argv, "--out", str(out)], engine=_tiny_engine(tokenizer), experts=mbti, judges=judges)
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    methods = res["methods"]
    names = [Composition.parse(c).name for c in comps]
    ones = [f"one:{a}:{n}" for n in names for a in ("EI", "SN", "TF", "JP")]
    assert set(methods) == {"base", "prompt", *(f"expert_{a}" for a in ("EI", "SN", "TF", "JP"))} | set(
        ones
    ) | {f"compose:{n}" for n in names}
    for m, e in methods.items():
        assert e["answers"] == 4, m
        own = e["axis"]
        assert set(e["per_axis"]) == ({f"{own[0]}/{own[1]}"} if own else {"E/I", "S/N", "T/F", "J/P"}), m
        for name, acc in e["per_axis"].items():
            assert _in_unit(acc), (m, name)
            expert = methods[f"expert_{name[0]}{name[2]}"]["per_axis"][name]["mean"]
            if m.startswith(("one:", "compose:")) and expert:
                assert acc["vs_expert"]["mean"] == pytest.approx(acc["mean"] / expert), (m, name)
            # by letter: the two sides' answers together are all of them
            sides = acc["by_letter"].values()
            assert sum(v["n"] for v in sides) == acc["n"]
            assert sum(v["mean"] * v["n"] for v in sides) == pytest.approx(acc["mean"] * acc["n"])
        assert ("mean_axis" in e) == (own is None) and ("vs_prompt" in e) == (own is None and m != "prompt")
    assert set(res["goals"]) == set(names)
    assert {"one_every_axis_0.9x", "four_every_axis_0.8x", "four_ppl_within_prompt"} <= set(
        res["goals"][names[0]]
    )
    rows = {(r["method"], r["id"]): r["text"] for r in res["rows"]}
    # ratio=anchor, lam 1, no constraint: one attribute is its expert alone (same seeds, same text)
    for a in ("EI", "SN", "TF", "JP"):
        for i in ("ENTJ-0", "ENTJ-1", "ISFP-0", "ISFP-1"):
            assert rows[(f"one:{a}:{names[1]}", i)] == rows[(f"expert_{a}", i)]
    assert (out / "axes.png").stat().st_size > 0 and "| expert_EI |" in (out / "table.md").read_text()
    sampled, rescored = tmp_path / "sampled", tmp_path / "rescored"
    kw = dict(engine=_tiny_engine(tokenizer), experts=mbti)
    assert axes.main([*argv, "--out", str(sampled), "--generate-only"], **kw) == 0
    argv_scored = [*argv, "--out", str(rescored), "--answers", str(sampled / "answers.json")]
    assert axes.main(argv_scored, judges=judges, **kw) == 0
    again = json.loads((rescored / "results.json").read_text())
    assert again["methods"] == methods
    for bad in (["--kinds", "nope"], ["--compositions", "product,guard=union"], ["--types", "ENTX"]):
        with pytest.raises(SystemExit):
            axes.parse_args(bad)


def test_axes_benchmark_measures_a_samplers_drift_from_fused(tmp_path, tokenizer, data, judges):
    """--via: the four-attribute target also sampled by scr (anchor drafts), compared pairwise with its
    fused answers: per-axis accuracy, target log-likelihood per token, perplexity, acceptance, clips."""
    spec = importlib.util.spec_from_file_location("axes_via", ROOT / "benchmarks" / "record" / "axes.py")
    axes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(axes)
    mbti, _ = _tiny_experts()
    argv = ["--data", str(data), "--types", "ENTJ,ISFP", "--per-type", "2", "--skip", "0"]
    argv += ["--max-new-tokens", "3", "--compositions", "product,lam=1,plausibility=0.3"]
    argv += ["--kinds", "four,prompt", "--via", "scr/anchor/2", "--embedder", "hash256", "--no-progress"]
    out = tmp_path / "via"
    assert (
        axes.main([*argv, "--out", str(out)], engine=_tiny_engine(tokenizer), experts=mbti, judges=judges)
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    name = Composition.parse("product,lam=1,plausibility=0.3").name
    e = res["methods"][f"via:scr/anchor/2:{name}"]
    assert e["fused_method"] == f"compose:{name}" and e["vs_fused"]["n"] == 4
    assert e["target_lp"]["mean"] < 0 and e["target_lp_vs_fused"]["n"] == 4
    assert 0 <= e["acceptance"] <= 1 and 0 <= e["clip_rate"] <= 1
    assert "| sampled by |" in (out / "table.md").read_text()
    with pytest.raises(SystemExit):
        axes.parse_args(["--via", "scr/anchor"])
