"""Data-set loaders: item text parsing, both folder formats, the split rules, every error case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from memory_store import (
    DataError,
    Example,
    Product,
    leave_one_out,
    load_dataset,
    load_jsonl,
    load_recbole,
    parse_item_text,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY_RECBOLE = FIXTURES / "tiny-recbole"
TINY_JSONL = FIXTURES / "tiny-jsonl"
COLD_USER = "A1TINYUSER04"


@pytest.fixture
def recbole_copy(tmp_path: Path) -> Path:
    """A writable copy of the tiny RecBole fixture."""
    return Path(shutil.copytree(TINY_RECBOLE, tmp_path / "tiny-recbole"))


@pytest.fixture
def jsonl_copy(tmp_path: Path) -> Path:
    """A writable copy of the tiny JSON-lines fixture."""
    return Path(shutil.copytree(TINY_JSONL, tmp_path / "tiny-jsonl"))


def replace_line(path: Path, number: int, text: str) -> None:
    """Replace 1-based line ``number`` of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_recbole(
    root: Path,
    products: list[Product],
    sequences: dict[str, list[str]],
    *,
    max_history: int,
    prefix: str = "Syn",
) -> Path:
    """Write a RecBole folder the way the UniSRec recipe does, from full sequences."""
    root.mkdir(parents=True, exist_ok=True)
    items = {p.item_id: i for i, p in enumerate(products)}
    users = {u: i for i, u in enumerate(sequences)}
    (root / f"{prefix}.item2index").write_text("".join(f"{k}\t{v}\n" for k, v in items.items()))
    (root / f"{prefix}.user2index").write_text("".join(f"{k}\t{v}\n" for k, v in users.items()))
    (root / f"{prefix}.text").write_text(
        "item_id:token\ttext:token_seq\n"
        + "".join(f"{p.item_id}\t{p.title}. {p.category}. {p.brand}. \n" for p in products)
    )
    splits = leave_one_out(list(sequences), sequences, max_history=max_history)
    for split, examples in splits.items():
        rows = "".join(
            f"{users[e.user_id]}\t{' '.join(str(items[h]) for h in e.history)}\t{items[e.target]}\n"
            for e in examples
        )
        (root / f"{prefix}.{split}.inter").write_text(
            "user_id:token\titem_id_list:token_seq\titem_id:token\n" + rows
        )
    return root


# -- item text ----------------------------------------------------------------------------


def test_parse_plain_line() -> None:
    text = "Fluke 117 Multimeter. Industrial & Scientific Test, Measure & Inspect. Fluke. "
    assert parse_item_text(text) == (
        "Fluke 117 Multimeter",
        "Industrial & Scientific Test, Measure & Inspect",
        "Fluke",
    )


def test_parse_empty_category() -> None:
    assert parse_item_text("Norton Strip Wheel, 4-1/2 Diameter. . Norton. ") == (
        "Norton Strip Wheel, 4-1/2 Diameter",
        "",
        "Norton",
    )


def test_parse_empty_brand_and_missing_trailing_space() -> None:
    assert parse_item_text("Glass Beaker. Industrial & Scientific Beakers. .") == (
        "Glass Beaker",
        "Industrial & Scientific Beakers",
        "",
    )


def test_parse_title_containing_dot_space() -> None:
    text = "Gorilla Tape, 1.88 in. x 35 yd. Black. Industrial & Scientific Duct Tape. Gorilla. "
    assert parse_item_text(text) == (
        "Gorilla Tape, 1.88 in. x 35 yd. Black",
        "Industrial & Scientific Duct Tape",
        "Gorilla",
    )


def test_parse_brand_containing_dot_space_uses_known_categories() -> None:
    text = "Mr. Heater Connector Kit. Industrial & Scientific Pipe Fittings. Mr. Heater. "
    known = {"Industrial & Scientific Pipe Fittings"}
    assert parse_item_text(text, known) == (
        "Mr. Heater Connector Kit",
        "Industrial & Scientific Pipe Fittings",
        "Mr. Heater",
    )
    # An unseen category is still found by the root it shares with the known ones.
    others = {"Industrial & Scientific Abrasives", "Industrial & Scientific Adhesives"}
    assert parse_item_text(text, others)[2] == "Mr. Heater"


def test_parse_title_and_empty_category_with_dotted_brand() -> None:
    text = "Strip Wheel (Pack of 1). . Norton Abrasives - St. Gobain. "
    assert parse_item_text(text) == ("Strip Wheel (Pack of 1)", "", "Norton Abrasives - St. Gobain")


def test_parse_too_few_parts() -> None:
    with pytest.raises(ValueError, match="part"):
        parse_item_text("just a title")


# -- loaders on the fixtures --------------------------------------------------------------


def test_load_recbole_fixture() -> None:
    ds = load_recbole(TINY_RECBOLE)
    assert ds.name == "Tiny"
    assert len(ds.products) == 12
    assert len(ds.users) == 7
    assert ds.users[0] == "A1TINYUSER01" and COLD_USER in ds.users
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 15, "valid": 6, "test": 6}
    assert ds.sequences["A1TINYUSER01"] == [
        "B000TINY01",
        "B000TINY02",
        "B000TINY04",
        "B000TINY03",
        "B000TINY10",
    ]
    assert ds.examples("test")[0] == Example(
        "A1TINYUSER01", ("B000TINY01", "B000TINY02", "B000TINY04", "B000TINY03"), "B000TINY10"
    )
    # Titles with ". " survive the text parsing.
    assert (
        ds.products["B000TINY07"].title == "Gorilla Tape, Black Duct Tape, 1.88 in. x 35 yd. Black"
    )
    assert ds.products["B000TINY07"].brand == "Gorilla"
    assert len({p.category for p in ds.products.values()}) == 4


def test_cold_start_user_is_listed_without_examples() -> None:
    ds = load_recbole(TINY_RECBOLE)
    assert ds.sequences[COLD_USER] == []
    assert all(e.user_id != COLD_USER for split in ds.splits.values() for e in split)


def test_real_ids_only() -> None:
    ds = load_recbole(TINY_RECBOLE)
    for split in ds.splits.values():
        for e in split:
            assert e.user_id in ds.sequences
            assert all(i in ds.products for i in (*e.history, e.target))


def test_jsonl_and_recbole_fixtures_hold_the_same_data() -> None:
    a, b = load_recbole(TINY_RECBOLE), load_jsonl(TINY_JSONL)
    assert a.products == b.products
    assert a.users == b.users
    assert a.sequences == b.sequences
    assert a.splits == b.splits


def test_load_dataset_detects_the_format() -> None:
    assert load_dataset(TINY_JSONL).name == "tiny-jsonl"
    assert load_dataset(TINY_RECBOLE).name == "Tiny"


def test_unknown_split() -> None:
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_jsonl(TINY_JSONL).examples("dev")


# -- split rules --------------------------------------------------------------------------


def test_leave_one_out_rules() -> None:
    seqs = {"u": ["a", "b", "c", "d", "e"], "two": ["x", "y"], "one": ["z"], "none": []}
    splits = leave_one_out(["u", "two", "one", "none"], seqs)
    assert splits["test"] == [Example("u", ("a", "b", "c", "d"), "e"), Example("two", ("x",), "y")]
    assert splits["valid"] == [Example("u", ("a", "b", "c"), "d")]
    assert splits["train"] == [Example("u", ("a", "b"), "c"), Example("u", ("a",), "b")]


def test_leave_one_out_caps_histories() -> None:
    splits = leave_one_out(["u"], {"u": list("abcdef")}, max_history=2)
    assert splits["test"] == [Example("u", ("d", "e"), "f")]
    assert splits["train"][0] == Example("u", ("b", "c"), "d")


def test_jsonl_splits() -> None:
    ds = load_jsonl(TINY_JSONL)
    seq = ds.sequences["A1TINYUSER03"]  # 6 items
    train = [e for e in ds.examples("train") if e.user_id == "A1TINYUSER03"]
    assert [(e.history, e.target) for e in train] == [
        (tuple(seq[:3]), seq[3]),
        (tuple(seq[:2]), seq[2]),
        (tuple(seq[:1]), seq[1]),
    ]
    assert Example("A1TINYUSER03", tuple(seq[:4]), seq[4]) in ds.examples("valid")
    assert Example("A1TINYUSER03", tuple(seq[:5]), seq[5]) in ds.examples("test")


def test_recbole_restores_items_beyond_the_history_cap(tmp_path: Path) -> None:
    products = [
        Product(item_id=f"I{i}", title=f"Item {i}", category="C", brand="B") for i in range(9)
    ]
    full = {"long": [f"I{i}" for i in range(9)], "short": ["I1", "I2", "I3"]}
    ds = load_recbole(write_recbole(tmp_path / "syn", products, full, max_history=3))
    assert ds.examples("test")[0].history == ("I5", "I6", "I7")  # capped in the file
    assert ds.sequences == full
    assert leave_one_out(ds.users, ds.sequences, max_history=3) == ds.splits


# -- errors -------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_folder_with_neither_format(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a data-set folder"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("name", ["Tiny.valid.inter", "Tiny.user2index", "Tiny.text"])
def test_recbole_missing_file(recbole_copy: Path, name: str) -> None:
    (recbole_copy / name).unlink()
    with pytest.raises(DataError) as err:
        load_recbole(recbole_copy)
    assert err.value.path == recbole_copy / name
    assert str(err.value) == f"{recbole_copy / name}: missing file"


def test_recbole_several_prefixes(recbole_copy: Path) -> None:
    shutil.copy(recbole_copy / "Tiny.text", recbole_copy / "Other.text")
    with pytest.raises(DataError, match="several RecBole prefixes"):
        load_recbole(recbole_copy)


@pytest.mark.parametrize(
    ("name", "line", "text", "message"),
    [
        ("Tiny.test.inter", 3, "1\t2 5 6", "expected 3 tab-separated columns, found 2"),
        ("Tiny.test.inter", 2, "0\t0 1 2 x\t4", "expected an integer id, got 'x'"),
        ("Tiny.train.inter", 4, "1\t2\t99", "unknown item index 99"),
        ("Tiny.valid.inter", 2, "42\t0 1 2\t3", "unknown user index 42"),
        ("Tiny.item2index", 5, "B000TINY10", "expected 2 tab-separated columns"),
        ("Tiny.user2index", 2, "A1TINYUSER01\t1", "duplicate id 'A1TINYUSER01'"),
        ("Tiny.text", 2, "B000TINY01\tno parts here", "item text has 1 part(s)"),
        ("Tiny.text", 1, "B000TINY01\tsome text. cat. brand. ", "expected a RecBole header"),
    ],
)
def test_recbole_bad_line_names_file_and_line(
    recbole_copy: Path, name: str, line: int, text: str, message: str
) -> None:
    replace_line(recbole_copy / name, line, text)
    with pytest.raises(DataError) as err:
        load_recbole(recbole_copy)
    assert err.value.line == line
    assert str(err.value).startswith(f"{recbole_copy / name}:{line}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_recbole_interacted_item_without_text(recbole_copy: Path) -> None:
    text = recbole_copy / "Tiny.text"
    text.write_text(
        "".join(x for x in text.read_text().splitlines(True) if not x.startswith("B000TINY10"))
    )
    with pytest.raises(
        DataError, match=r"Tiny\.train\.inter:8: item 'B000TINY10' has no line in Tiny\.text"
    ):
        load_recbole(recbole_copy)


@pytest.mark.parametrize("name", ["products.jsonl", "sequences.jsonl"])
def test_jsonl_missing_file(jsonl_copy: Path, name: str) -> None:
    (jsonl_copy / name).unlink()
    with pytest.raises(DataError, match="missing file") as err:
        load_jsonl(jsonl_copy)
    assert err.value.path.name == name


@pytest.mark.parametrize(
    ("name", "line", "text", "message"),
    [
        ("products.jsonl", 3, '{"title": "no id"}', "item_id: Field required"),
        ("products.jsonl", 2, "{not json", "Invalid JSON"),
        ("products.jsonl", 4, '{"item_id": "B000TINY01", "title": "again"}', "duplicate item id"),
        ("sequences.jsonl", 2, '{"user_id": "A1TINYUSER02", "items": "B000TINY01"}', "items:"),
        ("sequences.jsonl", 5, '{"user_id": "U9", "items": ["B000TINY01", "NOPE"]}', "'NOPE'"),
        ("sequences.jsonl", 3, '{"user_id": "A1TINYUSER01", "items": []}', "duplicate user id"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(
    jsonl_copy: Path, name: str, line: int, text: str, message: str
) -> None:
    replace_line(jsonl_copy / name, line, text)
    with pytest.raises(DataError) as err:
        load_jsonl(jsonl_copy)
    assert str(err.value).startswith(f"{jsonl_copy / name}:{line}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_jsonl_unknown_item_message(jsonl_copy: Path) -> None:
    replace_line(
        jsonl_copy / "sequences.jsonl",
        2,
        json.dumps({"user_id": "U", "items": ["B000TINY01", "X"]}),
    )
    with pytest.raises(DataError) as err:
        load_jsonl(jsonl_copy)
    assert str(err.value) == (
        f"{jsonl_copy / 'sequences.jsonl'}:2: unknown item id 'X' at items[1] "
        "(not in products.jsonl)"
    )
