"""The lm-evaluation-harness plugin: the real CLI end to end on a tiny model folder, and the LM methods."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
from tiny import ANSWER_VOCAB

from mpg.engine import Engine
from mpg.eval.methods import mbti_target
from mpg.likelihood import target_loglik

VOCAB = ANSWER_VOCAB
ITEMS = [
    {"id": 1, "statement": "a b", "dimension": "E/I", "keyed": "E"},
    {"id": 2, "statement": "b", "dimension": "T/F", "keyed": "F"},
    {"id": 3, "statement": "a a", "dimension": "P/J", "keyed": "P"},
]


TASK_YAML = Path(__file__).parents[1] / "mpg/eval/tasks/mbti_16p/mbti_16p.yaml"


def _check_run(out: Path, engine, method: str, mode: str) -> None:
    """The results JSON has acc over the 3 items, and every logged loglikelihood is the likelihood module's."""
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["results"]["mbti_16p"]["sample_len"] == 3
    assert results["config"]["mpg_method"] == method and results["config"]["mpg_mode"] == mode
    samples = [
        json.loads(line) for line in next(out.rglob("samples_mbti_16p_*.jsonl")).read_text().splitlines()
    ]
    target = mbti_target(engine, method, "ENTJ", experts="prompted")
    right = 0
    for s in samples:
        (agree, _), (disagree, _) = [(float(v), g) for v, g in s["filtered_resps"]]
        prompt = s["arguments"]["gen_args_0"]["arg_0"]
        assert agree == pytest.approx(target_loglik(engine, target, prompt, "Agree", mode), abs=1e-4)
        assert disagree == pytest.approx(target_loglik(engine, target, prompt, "Disagree", mode), abs=1e-4)
        assert s["doc"]["label"] == (0 if s["doc"]["keyed"] in "ENTJ" else 1)
        right += int((agree > disagree) == (s["doc"]["label"] == 0))
    assert results["results"]["mbti_16p"]["acc,none"] == pytest.approx(right / 3)


def test_lm_eval_cli_end_to_end(base_dir, tmp_path):
    """Stock `lm_eval --model mpg` (python -m lm_eval, lm-eval's console-script code), the task by path."""
    data = tmp_path / "q.json"
    data.write_text(json.dumps(ITEMS))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "mpg",
        "--model_args",
        f"base={base_dir},persona=ENTJ,experts=prompted,method=scr_k4",
        "--tasks",
        str(TASK_YAML),
        "--metadata",
        f"data_path={data}",
        "--device",
        "cpu",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(tmp_path / "out", Engine.from_pretrained(base_dir), "scr_k4", "chunk")


def test_mpg_lm_eval_wrapper(base_dir, tmp_path, monkeypatch):
    """`mpg-lm-eval` (mpg.eval.lm_eval_cli.main): the task by name, mpg's task folder added for us."""
    from mpg.eval.lm_eval_cli import main

    data = tmp_path / "q.json"
    data.write_text(json.dumps(ITEMS))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MPG_QUESTIONNAIRE", str(data))  # the data path from the environment
    monkeypatch.setattr(sys, "argv", ["pytest"])
    main(
        [
            "--model",
            "mpg",
            "--model_args",
            f"base={base_dir},persona=ENTJ,experts=prompted",
            "--tasks",
            "mbti_16p",
            "--device",
            "cpu",
            "--output_path",
            str(tmp_path / "out"),
            "--log_samples",
        ]
    )
    _check_run(tmp_path / "out", Engine.from_pretrained(base_dir), "fused_mixture", "token")


def test_registration_is_declared():
    """Newer lm-eval finds the model through the "lm_eval.models" entry point; 0.4.13 through our CLI."""
    from lm_eval.api.registry import Registry

    from mpg.eval.lm_eval_plugin import MPGLM

    eps = [ep for ep in entry_points(group="lm_eval.models") if ep.name == "mpg"]
    assert eps and eps[0].load() is MPGLM
    reg = Registry("model")  # what plugin-aware lm-eval does with it
    reg.register("mpg", target=eps[0])
    assert reg.get("mpg") is MPGLM
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("mpg-lm-eval") == "mpg.eval.lm_eval_cli:main"
    assert TASK_YAML.exists()


def test_lm_methods(base_dir):
    from lm_eval.api.instance import Instance

    from mpg.eval.lm_eval_plugin import MPGLM

    engine = Engine.from_pretrained(base_dir)
    lm = MPGLM(
        engine=engine, persona="ENTJ", experts="prompted", method="fused_product", max_gen_toks=3, seed=1
    )

    def req(kind, args):
        return Instance(kind, {}, args, 0)

    ll = lm.loglikelihood(
        [
            req("loglikelihood", ("a b", "Agree a")),
            req("loglikelihood", ("b", "Disagree")),
            req("loglikelihood", ("a b", "b")),
        ]
    )
    assert ll[0][0] == pytest.approx(target_loglik(engine, lm.target, "a b", "Agree a", "token"), abs=1e-5)
    assert ll[1][0] == pytest.approx(target_loglik(engine, lm.target, "b", "Disagree", "token"), abs=1e-5)
    assert all(isinstance(g, bool) for _, g in ll)
    (rolling,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", ("a b Agree",))])
    assert rolling == pytest.approx(target_loglik(engine, lm.target, "", "a b Agree", "token"), abs=1e-5)
    texts = lm.generate_until(
        [
            req("generate_until", ("a b", {"until": ["\n"], "max_gen_toks": 3})),
            req("generate_until", ("a", {"do_sample": True, "temperature": 1.0})),
        ]
    )
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(TypeError, match="unknown mpg model_args: persna"):
        MPGLM(engine=engine, persna="ENTJ")
    with pytest.raises(ValueError, match="either persona"):
        MPGLM(engine=engine, persona="ENTJ", profile="p", personality="q")
    with pytest.raises(ValueError, match="unknown method"):
        MPGLM(engine=engine, method="magic")


def test_task_loader_errors(tmp_path, monkeypatch):
    """The mbti_16p loader says what is missing; the gold answer follows the type."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mbti_16p_utils", TASK_YAML.parent / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.delenv("MPG_QUESTIONNAIRE", raising=False)
    with pytest.raises(ValueError, match="data_path"):
        utils.load_dataset(persona="ENTJ")
    data = tmp_path / "q.json"
    data.write_text(json.dumps(ITEMS))
    with pytest.raises(ValueError, match="persona=TYPE"):
        utils.load_dataset(data_path=str(data))
    with pytest.raises(ValueError, match="full four-letter"):
        utils.load_dataset(data_path=str(data), persona="EN")
    docs = utils.load_dataset(data_path=str(data), persona="istp", version=1.0)["test"]
    assert [d["label"] for d in docs] == [1, 1, 0] and docs[0]["persona"] == "ISTP"
