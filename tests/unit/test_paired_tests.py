"""The evaluation's paired sign tests: counted per shopper against a reference, written into the
report (counts only), rendered as its markdown and as the docs' ``kind=paired`` table, and chosen
with ``eval --paired-against``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.cli import main
from training.evaluation import tables
from training.evaluation.metrics import (
    HIT_AT_EQUAL_Q_EM,
    UserOutcome,
    aggregate,
    paired_tests,
    score_outcomes,
    sign_test,
)
from training.evaluation.report import paired_reference, write_report
from training.evaluation.specs import EvalError, MethodResult, MethodSpec

ROOT = tables.ROOT
TRUTH = "tape duct"


def _outcome(user: str, em: bool, hit: bool, query: str | None = None) -> UserOutcome:
    """A shopper whose query is right (``em``) or not, with the target in the top 10 (``hit``)."""
    retrieved = ["a", "b", "target"] if hit else ["a", "b", "c"]
    return UserOutcome(
        user_id=user,
        target="target",
        truth=TRUTH,
        query=query or (TRUTH if em else "glue stick"),
        retrieved=retrieved,
    )


# (count, the method's (Q_EM, hit), the reference's (Q_EM, hit), both wrong with other queries)
CASES = [
    (8, (1, 1), (0, 0), False),  # better on everything
    (1, (0, 0), (1, 1), False),  # worse on everything
    (3, (1, 0), (1, 1), False),  # same query, hit lost: Q_EM tie, I_Hit and Cons@10 worse
    (2, (0, 1), (0, 0), True),  # two wrong queries, the method's hits: I_Hit better only
    (4, (1, 1), (1, 1), False),  # the same
]


def _methods() -> tuple[list[UserOutcome], list[UserOutcome]]:
    mine: list[UserOutcome] = []
    ref: list[UserOutcome] = []
    for count, (m_em, m_hit), (r_em, r_hit), other in CASES:
        for _ in range(count):
            user = f"u{len(mine)}"
            mine.append(_outcome(user, bool(m_em), bool(m_hit), "hot glue" if other else None))
            ref.append(_outcome(user, bool(r_em), bool(r_hit)))
    # a shopper the reference did not score is left out of every count
    mine.append(_outcome("only-mine", True, True))
    return mine, ref


def test_the_sign_test_against_a_hand_count() -> None:
    # 8 better, 1 worse: 2 * (C(9,0) + C(9,1)) / 2^9 = 20 / 512
    assert sign_test(8, 1) == pytest.approx(20 / 512)
    assert round(sign_test(8, 1), 4) == 0.0391
    assert sign_test(0, 0) == 1.0
    assert sign_test(2, 3) == pytest.approx(1.0)


def test_paired_counts_and_p_on_hand_made_outcomes() -> None:
    mine, ref = _methods()
    tests = paired_tests({"agent@x": mine, "ranker": ref}, "ranker")
    assert list(tests) == ["agent@x"]  # the reference is not paired with itself
    entry = tests["agent@x"]
    assert entry["shoppers"] == 18
    assert entry["differs"] == 8 + 1 + 2  # the Q_EM changes and the two other wrong queries
    assert entry["q_em"] == {"better": 8, "worse": 1, "ties": 9, "p": pytest.approx(20 / 512)}
    # hits: better 8 + 2, worse 1 + 3; p = 2 * sum(C(14, k), k >= 10) / 2^14
    assert entry["i_hit@10"] == {
        "better": 10,
        "worse": 4,
        "ties": 4,
        "p": pytest.approx(2 * (1001 + 364 + 91 + 14 + 1) / 2**14),
    }
    # Cons@10: better 8, worse 1 + 3; p = 2 * sum(C(12, k), k >= 8) / 2^12
    assert entry["cons@10"] == {
        "better": 8,
        "worse": 4,
        "ties": 6,
        "p": pytest.approx(2 * (495 + 220 + 66 + 12 + 1) / 2**12),
    }
    # over the 3 + 2 + 4 shoppers whose Q_EM is the same: hits 2 better, 3 worse
    assert entry[HIT_AT_EQUAL_Q_EM] == {"better": 2, "worse": 3, "ties": 4, "p": pytest.approx(1.0)}


def test_a_method_equal_to_the_reference_has_p_one() -> None:
    _, ref = _methods()
    entry = paired_tests({"ranker": ref, "copy": list(ref)}, "ranker")["copy"]
    assert entry["differs"] == 0
    for name in ("q_em", "i_hit@10", "cons@10", HIT_AT_EQUAL_Q_EM):
        assert entry[name]["better"] == entry[name]["worse"] == 0
        assert entry[name]["p"] == 1.0


def _result(label: str, outcomes: list[UserOutcome]) -> MethodResult:
    method, _, model = label.partition("@")
    result = MethodResult(MethodSpec(method, model or None), outcomes, 1.0)
    result.metrics = aggregate(score_outcomes(outcomes), resamples=50)
    return result


def test_the_report_carries_the_paired_section(tmp_path: Path) -> None:
    mine, ref = _methods()
    others = [_outcome(o.user_id, False, False) for o in ref]
    results = [_result("agent@x", mine), _result("ranker", ref), _result("popular", others)]
    header = {"data_name": "tiny", "split": "test", "users": 18}
    paths = write_report(tmp_path / "r.json", header, results)
    text = paths["json"].read_text()
    report = json.loads(text)
    paired = report["paired"]
    assert paired["reference"] == "ranker"
    assert list(paired["methods"]) == ["agent@x", "popular"]
    assert paired["methods"]["agent@x"]["q_em"]["better"] == 8
    assert paired["methods"]["popular"]["q_em"] == {
        "better": 0,
        "worse": 1 + 3 + 4,  # the reference's right queries
        "ties": 18 - 8,
        "p": pytest.approx(sign_test(0, 8)),
    }
    assert not re.search(r'"u\d+"|only-mine', text)  # counts only, no shopper's row
    md = paths["md"].read_text()
    main_table, _, after = md.partition("Paired against ranker")
    assert "| agent@x |" in main_table and after  # the paired table comes after the main one
    assert after.splitlines()[2].startswith(
        "| against ranker | other query | Q_EM better / worse (p) |"
    )
    assert (
        "| agent@x | 11 | 8 / 1 (0.039) | 10 / 4 (0.180) | 8 / 4 (0.388) | 2 / 3 (1.000) |" in after
    )

    # no reference among the methods, or none asked for: a null field and no paired table
    for against in (None, "markov"):
        paths = write_report(tmp_path / "n.json", header, results, paired_against=against)
        assert json.loads(paths["json"].read_text())["paired"] is None
        assert "Paired against" not in paths["md"].read_text()


def test_the_reference_is_ranker_by_default_or_the_one_asked_for() -> None:
    labels = ["last-category", "ranker", "agent@sft"]
    assert paired_reference(labels, None) == "ranker"
    assert paired_reference(["popular", "markov"], None) is None
    assert paired_reference(labels, "none") is None
    assert paired_reference(labels, "last-category") == "last-category"
    assert paired_reference(labels, "agent", default_model="models/sft") == "agent@sft"
    assert paired_reference(labels, "agent@models/sft") == "agent@sft"
    for bad in ("markov", "nonsense", "ranker,popular", "agent@other"):
        with pytest.raises(EvalError, match="--paired-against") as err:
            paired_reference(labels, bad)
        assert "\n" not in str(err.value)


FIXTURE = {
    "methods": {"agent@sft": {}, "ranker": {}, "markov": {}},
    "paired": {
        "reference": "ranker",
        "methods": {
            "agent@sft": {
                "shoppers": 8226,
                "differs": 1326,
                "q_em": {"better": 14, "worse": 6, "ties": 8206, "p": 0.1153},
                "i_hit@10": {"better": 1200, "worse": 1000, "ties": 6026, "p": 0.00002},
                "cons@10": {"better": 4, "worse": 1, "ties": 8221, "p": 0.375},
                HIT_AT_EQUAL_Q_EM: {"better": 8, "worse": 1, "ties": 8197, "p": 0.0390625},
            },
            "markov": {
                "shoppers": 8226,
                "differs": 300,
                "q_em": {"better": 0, "worse": 0, "ties": 8226, "p": 1.0},
                "i_hit@10": {"better": 0, "worse": 0, "ties": 8226, "p": 1.0},
                "cons@10": {"better": 0, "worse": 0, "ties": 8226, "p": 1.0},
                HIT_AT_EQUAL_Q_EM: {"better": 0, "worse": 0, "ties": 8226, "p": 1.0},
            },
        },
    },
}


def test_the_paired_table_renders_the_readme_form() -> None:
    assert tables.paired_table(FIXTURE, {}) == (
        "| against ranker | other query | Q_EM better / worse (p) | I_Hit@10 better / worse (p) "
        "| Cons@10 better / worse (p) |\n"
        "|---|---|---|---|---|\n"
        "| agent@sft | 1,326 | 14 / 6 (0.115) | 1,200 / 1,000 (< 0.001) | 4 / 1 (0.375) |\n"
        "| markov | 300 | 0 / 0 (1.000) | 0 / 0 (1.000) | 0 / 0 (1.000) |\n"
    )
    table = tables.paired_table(FIXTURE, {"rows": "agent@sft", "columns": "i_hit@10_equal_q_em"})
    assert table.splitlines() == [
        "| against ranker | other query | I_Hit@10 at equal Q_EM better / worse (p) |",
        "|---|---|---|",
        "| agent@sft | 1,326 | 8 / 1 (0.039) |",
    ]
    with pytest.raises(tables.TableError, match="no paired test of 'popular'"):
        tables.paired_table(FIXTURE, {"rows": "popular"})
    with pytest.raises(tables.TableError, match="no paired test 'ndcg@10'"):
        tables.paired_table(FIXTURE, {"columns": "ndcg@10"})


def test_a_page_with_a_paired_marker_regenerates(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.json").write_text(json.dumps(FIXTURE), encoding="utf-8")
    page = "<!-- table: reports/r.json kind=paired rows=markov -->\n<!-- /table -->\n"
    new, changed = tables.regenerate(page, tmp_path)
    assert changed == [("reports/r.json", 1)]
    assert "| markov | 300 | 0 / 0 (1.000) |" in new
    assert tables.regenerate(new, tmp_path)[1] == []  # written once, then equal
    with pytest.raises(tables.TableError, match="line 1: unknown table kind 'pairs'"):
        tables.regenerate(page.replace("kind=paired", "kind=pairs"), tmp_path)


def test_a_report_from_before_the_paired_tests_renders_one_line(tmp_path: Path) -> None:
    source = "reports/scientific-test-dense.json"
    old = json.loads((ROOT / source).read_text(encoding="utf-8"))
    assert "paired" not in old
    assert tables.paired_table(old, {}) == tables.NO_PAIRED
    assert tables.NO_PAIRED.count("\n") == 1
    # its other tables render as before, beside the paired marker, through the CLI
    page = tmp_path / "page.md"
    page.write_text(
        f"<!-- table: {source} columns=q_em,cons@10 -->\n<!-- /table -->\n\n"
        f"<!-- table: {source} kind=paired -->\n<!-- /table -->\n",
        encoding="utf-8",
    )
    assert tables.main([str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.count("| method | q_em | cons@10 |") == 1
    assert tables.NO_PAIRED in text
    assert tables.main(["--check", str(page)]) == 0


def test_an_unknown_paired_against_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["eval", "--data", str(tmp_path / "no-data"), "--home", str(tmp_path / "home")]
    base += ["--methods", "last-category,ranker", "--out", str(tmp_path / "r.json")]
    for bad in ("markov", "nonsense"):
        # refused before the data set loads (the folder does not exist)
        assert main([*base, "--paired-against", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--paired-against {bad!r}" in err[0], err
    assert not (tmp_path / "r.json").exists()
