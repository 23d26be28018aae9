"""``queryagent-train eval`` end to end on the tiny fixtures: real Chroma and MiniLM, the scripted
drafter in place of the language model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import agent.drafting
import training.evaluation.runner
from agent.drafting import ScriptedDrafter, default_model
from tests.helpers.tiny_models import stand_in_adapter
from training.cli import main
from training.evaluation.metrics import UserOutcome, score_outcomes
from training.evaluation.runner import METHODS, MODEL_METHODS

pytestmark = pytest.mark.integration

# Model methods named without a model use the shipped drafter, and the report says which.
SHIPPED = Path(default_model()).name
LABELS = [f"{m}@{SHIPPED}" if m in MODEL_METHODS else m for m in METHODS]


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedDrafter]:
    made: list[ScriptedDrafter] = []

    def factory(model=None, **kwargs):
        drafter = ScriptedDrafter(["Query: duct tape"])
        made.append(drafter)
        return drafter

    monkeypatch.setattr(agent.drafting, "HFDrafter", factory)
    monkeypatch.setattr(training.evaluation.runner, "HFDrafter", factory)  # imported at its top
    return made


def test_all_methods_write_json_markdown_and_chart(
    tmp_path: Path, tiny_recbole_dir: Path, scripted
) -> None:
    out = tmp_path / "report.json"
    code = main(
        [
            "eval",
            "--data",
            str(tiny_recbole_dir),
            "--split",
            "test",
            "--methods",
            ",".join(METHODS),
            "--out",
            str(out),
            "--home",
            str(tmp_path / "home"),
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == LABELS
    assert report["users"] == 6 and report["skipped_no_category"] == 0
    for label, result in report["methods"].items():
        m = result["metrics"]
        for name in ("q_em", "i_hit@1", "i_hit@10", "ndcg@10", "cons@1", "cons@10", "format_valid"):
            assert 0.0 <= m[name]["low"] <= m[name]["mean"] <= m[name]["high"] <= 1.0, (label, name)
    # the scripted drafter always says "duct tape": a valid query, never the category-path truth
    assert report["methods"][f"llm-direct@{SHIPPED}"]["metrics"]["format_valid"]["mean"] == 1.0
    assert report["methods"][f"llm-direct@{SHIPPED}"]["metrics"]["q_em"]["mean"] == 0.0
    # the agent recalls candidates beyond the model's (memory, transitions, next-item) and ranks
    # them, so it can match the truth where the model alone cannot
    assert report["methods"][f"agent@{SHIPPED}"]["metrics"]["q_em"]["mean"] > 0.0
    # two of six test targets are duct tapes: the query retrieves them among the top 10
    assert report["methods"][f"llm-direct@{SHIPPED}"]["metrics"]["i_hit@10"]["mean"] > 0
    # one query for all six users (the report rounds to 4 places)
    assert report["methods"]["popular"]["distinct_ratio"] == pytest.approx(1 / 6, abs=1e-4)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    umask = os.umask(0)
    os.umask(umask)
    for written in (out, out.with_suffix(".md"), out.with_suffix(".png")):
        assert written.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    table = out.with_suffix(".md").read_text()
    assert f"| agent-single-turn@{SHIPPED} |" in table and "cons@10" in table


def test_interrupted_run_resumes_from_cache(
    tmp_path: Path, tiny_recbole_dir: Path, scripted
) -> None:
    out = tmp_path / "r.json"
    args = [
        "eval",
        "--data",
        str(tiny_recbole_dir),
        "--methods",
        "llm-direct",
        "--out",
        str(out),
        "--home",
        str(tmp_path / "home"),
        "--batch-size",
        "2",
    ]
    assert main(args) == 0
    first = json.loads(out.read_text())["methods"][f"llm-direct@{SHIPPED}"]["metrics"]
    first.pop("latency_s")  # wall time: differs run to run
    cache = out.with_suffix(".cache") / f"llm-direct@{SHIPPED}.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 6  # header and one line per user
    cache.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # two users kept, one cut short
    assert main(args) == 0
    prompts = sum(len(call) for d in scripted for call in [d.calls])
    assert prompts == 6 + 4  # the first run, then only the four users not cached
    again = json.loads(out.read_text())["methods"][f"llm-direct@{SHIPPED}"]["metrics"]
    again.pop("latency_s")
    assert again == first


def test_the_cache_resumes_when_the_model_folder_has_another_path(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole-split cache is tracked in git: a clone elsewhere (or `make eval` naming the
    # folder relatively) must resume it, not start over. Same folder content, another path.
    # The default model is an adapter folder (a stand-in: the scripted drafter loads nothing).
    shipped = stand_in_adapter(tmp_path / "repo" / "models" / "smollm2-writer")
    monkeypatch.setenv("QUERYAGENT_MODEL", str(shipped))
    name = shipped.name
    elsewhere = tmp_path / "clone" / "models" / name
    elsewhere.parent.mkdir(parents=True)
    elsewhere.symlink_to(shipped.resolve(), target_is_directory=True)
    out = tmp_path / "r.json"
    common = ["eval", "--data", str(tiny_recbole_dir), "--home", str(tmp_path / "home")]
    common += ["--batch-size", "2", "--out", str(out)]
    assert main([*common, "--methods", "llm-direct"]) == 0
    prompts = sum(len(d.calls) for d in scripted)
    assert prompts == 6
    cache = out.with_suffix(".cache") / f"llm-direct@{name}.jsonl"
    rows = cache.read_text().splitlines()[1:]
    assert main([*common, "--methods", f"llm-direct@{elsewhere}"]) == 0
    assert sum(len(d.calls) for d in scripted) == prompts  # resumed: nothing ran again
    assert cache.read_text().splitlines()[1:] == rows
    # another model's content is another configuration: its cache starts over
    (other := tmp_path / "other" / name).mkdir(parents=True)
    for f in shipped.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    with (other / "adapter_config.json").open("a") as f:
        f.write("\n")  # another file's bytes: another digest
    assert main([*common, "--methods", f"llm-direct@{other}"]) == 0
    assert sum(len(d.calls) for d in scripted) == prompts + 6
    # ... and the first configuration's rows were parked, not deleted: going back resumes them
    parked = list((cache.parent / "other-configurations").glob(f"{cache.stem}.*.jsonl"))
    assert len(parked) == 1 and parked[0].read_text().splitlines()[1:] == rows
    other_rows = cache.read_text().splitlines()[1:]
    assert main([*common, "--methods", f"llm-direct@{elsewhere}"]) == 0
    assert sum(len(d.calls) for d in scripted) == prompts + 6  # nothing ran again
    assert cache.read_text().splitlines()[1:] == rows
    assert main([*common, "--methods", f"llm-direct@{other}"]) == 0  # and forth again
    assert sum(len(d.calls) for d in scripted) == prompts + 6
    assert cache.read_text().splitlines()[1:] == other_rows


def test_cached_only_reports_the_users_every_method_has_and_runs_nothing(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, capsys
) -> None:
    out = tmp_path / "r.json"
    common = ["eval", "--data", str(tiny_recbole_dir), "--home", str(tmp_path / "home")]
    common += ["--batch-size", "2", "--methods", "popular,llm-direct"]
    assert main([*common, "--out", str(out)]) == 0
    full = json.loads(out.read_text())
    cache = out.with_suffix(".cache") / f"llm-direct@{SHIPPED}.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:4]) + "\n")  # a run stopped after three users
    kept = {json.loads(line)["user_id"] for line in lines[1:4]}
    prompts = sum(len(d.calls) for d in scripted)

    look = tmp_path / "partial.json"
    args = [*common, "--out", str(look), "--cache", str(out.with_suffix(".cache")), "--cached-only"]
    assert main(args) == 0
    assert sum(len(d.calls) for d in scripted) == prompts  # nothing ran
    report = json.loads(look.read_text())
    assert report["users"] == 3 and report["cached_only"]["users_in_split"] == 6
    assert cache.read_text().splitlines()[1:] == lines[1:4]  # the cache is untouched
    assert "3 users of 6 (cached so far" in look.with_suffix(".md").read_text()
    # popular's row covers the same three users, not its six
    rows = (out.with_suffix(".cache") / "popular.jsonl").read_text().splitlines()[1:]
    outcomes = [UserOutcome(**json.loads(line)) for line in rows]
    on_kept = score_outcomes([o for o in outcomes if o.user_id in kept])
    on_all = score_outcomes(outcomes)
    rouge = report["methods"]["popular"]["metrics"]["rouge_l"]["mean"]
    assert rouge == pytest.approx(sum(r["rouge_l"] for r in on_kept) / 3)
    assert rouge != pytest.approx(sum(r["rouge_l"] for r in on_all) / 6)
    assert full["users"] == 6 and "cached_only" not in full

    # a cache made under another configuration is reported, not deleted
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no cached users under this configuration" in err[0]
    assert cache.read_text().splitlines()[1:] == lines[1:4]
    assert (out.with_suffix(".cache") / "popular.jsonl").read_text().splitlines()[1:] == rows


def test_shards_split_the_users_and_the_unsharded_run_reports_them_together(
    tmp_path: Path, tiny_recbole_dir: Path, scripted, capsys
) -> None:
    common = ["eval", "--data", str(tiny_recbole_dir), "--home", str(tmp_path / "home")]
    common += ["--batch-size", "2", "--methods", "popular,llm-direct"]
    whole = tmp_path / "whole.json"
    assert main([*common, "--out", str(whole)]) == 0
    prompts = sum(len(d.calls) for d in scripted)
    assert prompts == 6

    out = tmp_path / "sharded.json"
    cache = out.with_suffix(".cache") / f"llm-direct@{SHIPPED}.jsonl"
    seen: list[set[str]] = []
    for shard in ("0", "1", "2"):
        before = set(cache.read_text().splitlines()[1:]) if cache.exists() else set()
        args = [*common, "--out", str(out), "--shard-id", shard, "--shard-num", "3"]
        assert main(args) == 0
        assert not out.exists()  # a shard reports nothing
        rows = cache.read_text().splitlines()
        assert set(rows[1:]) >= before  # the earlier shards' rows are kept
        seen.append({json.loads(line)["user_id"] for line in rows[1:] if line not in before})
    assert [len(users) for users in seen] == [2, 2, 2]
    assert set.union(*seen) == {
        json.loads(r)["user_id"]
        for r in whole.with_suffix(".cache").joinpath(cache.name).read_text().splitlines()[1:]
    }
    assert sum(len(d.calls) for d in scripted) == prompts + 6  # each user ran once
    assert "shard 2 of 3: 2 of 6 users cached" in capsys.readouterr().out

    assert main([*common, "--out", str(out)]) == 0  # reports the shards together
    assert sum(len(d.calls) for d in scripted) == prompts + 6  # nothing ran again
    merged, alone = json.loads(out.read_text()), json.loads(whole.read_text())
    assert merged["users"] == 6 and "cached_only" not in merged
    for label in alone["methods"]:
        a, b = alone["methods"][label]["metrics"], merged["methods"][label]["metrics"]
        a.pop("latency_s"), b.pop("latency_s")
        assert a == b, label

    capsys.readouterr()
    for bad in (
        ["--shard-id", "3", "--shard-num", "3"],
        ["--shard-num", "0"],
        ["--shard-id", "0", "--shard-num", "2", "--cached-only"],
    ):
        assert main([*common, "--out", str(tmp_path / "bad.json"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "shard" in err[0], bad


def test_jsonl_folder_loads_unchanged(tmp_path: Path, scripted) -> None:
    data = Path(__file__).parents[1] / "fixtures" / "tiny-jsonl"
    out = tmp_path / "j.json"
    assert (
        main(
            [
                "eval",
                "--data",
                str(data),
                "--methods",
                "popular,last-category",
                "--out",
                str(out),
                "--home",
                str(tmp_path / "home"),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["users"] == 6


def test_unknown_method_lists_valid_ones(tmp_path: Path, tiny_recbole_dir: Path, capsys) -> None:
    code = main(
        [
            "eval",
            "--data",
            str(tiny_recbole_dir),
            "--methods",
            "popular,bm25",
            "--out",
            str(tmp_path / "x.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "unknown method 'bm25'" in err and "last-category" in err
    assert not (tmp_path / "x.json").exists()


def test_missing_file_is_named(tmp_path: Path, tiny_recbole_dir: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for f in tiny_recbole_dir.iterdir():
        if not f.name.endswith(".item2index"):
            (data / f.name).write_text(f.read_text())
    code = main(
        ["eval", "--data", str(data), "--methods", "popular", "--out", str(tmp_path / "x.json")]
    )
    assert code == 2 and "Tiny.item2index" in capsys.readouterr().err


def test_cards_flag_writes_the_table_into_a_model_card(
    tmp_path: Path, tiny_recbole_dir: Path, scripted
) -> None:
    from huggingface_hub import ModelCard

    from agent.drafting import ResolvedModel
    from training.common import model_card

    folder = tmp_path / "my-adapter"
    folder.mkdir()
    # what a trainer leaves beside the card (the scripted drafter never loads it)
    config = '{"base_model_name_or_path": "some/base", "peft_type": "LORA"}'
    (folder / "adapter_config.json").write_text(config)
    model_card(
        resolved=ResolvedModel(str(folder), adapter=True, base="some/base"),
        adapter=True,
        title="my-adapter",
        summary="A test adapter.",
        data="Some pairs.",
        command="queryagent-train sft --config recipe.yaml",
        tags=["sft"],
    ).save(folder / "README.md")
    out = tmp_path / "report.json"
    argv = ["eval", "--data", str(tiny_recbole_dir), "--split", "test", "--out", str(out)]
    argv += ["--methods", f"popular,llm-direct@{folder}", "--home", str(tmp_path / "home")]
    assert main([*argv, "--cards"]) == 0
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "some/base" and card.data.library_name == "peft"
    assert "queryagent-train sft --config recipe.yaml" in card.text  # other sections kept
    evaluation = card.text.split("## Evaluation", 1)[1]
    assert "| popular |" in evaluation and "| llm-direct@my-adapter |" in evaluation
    assert "Not evaluated yet" not in evaluation and str(out) in evaluation
