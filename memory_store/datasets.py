# Over 400 lines: the two loaders (RecBole, JSON lines) share the ``Dataset`` they build, the
# line-numbered ``DataError`` checks and the leave-one-out split, and are read side by side with
# ``DATA_FORMAT.md``; split by format they would duplicate the checks or import each other.
"""Data-set loaders: the RecBole folder of the bundled Amazon set and a generic JSON-lines folder.

Both give the same :class:`Dataset`: the catalog (``Product`` by real item id), every user in file
order (including users with no interactions, the cold-start case), each user's chronological
sequence, and the leave-one-out splits (``train`` / ``valid`` / ``test`` lists of
:class:`Example`). Everything here uses the real ids (ASIN, reviewer id); RecBole's integer indices
never leave this module. A loader validates the whole folder before it returns anything, and every
problem is one :class:`DataError` line ``"<file>:<line>: <what is wrong>"``.

The formats and split rules are documented in ``memory_store/DATA_FORMAT.md``.

Example::

    from memory_store import load_dataset
    ds = load_dataset("/work/shared/data/amazon-scientific")
    len(ds.products), len(ds.users), len(ds.examples("train"))   # 4385 8442 34101
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError

from memory_store.products import Product

__all__ = [
    "DataError",
    "Dataset",
    "Example",
    "SPLITS",
    "leave_one_out",
    "load_dataset",
    "load_jsonl",
    "load_recbole",
    "parse_item_text",
]

SPLITS = ("train", "valid", "test")

# Input size limits: a line or a file beyond them is refused before anything is parsed (a 50 MB
# line once cost 4 GB of memory and a 949 MB home). Raise them with these variables.
MAX_LINE_BYTES_ENV = "QUERYAGENT_MAX_LINE_BYTES"
MAX_FILE_BYTES_ENV = "QUERYAGENT_MAX_FILE_BYTES"
DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB; the bundled set's longest line is 851 bytes
DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB; the bundled set's largest file is 0.9 MB

# RecBole's default MAX_ITEM_LIST_LENGTH, used by the UniSRec recipe that made the bundled set: a
# history longer than this keeps only its most recent items.
DEFAULT_MAX_HISTORY = 50

_RECBOLE_SUFFIXES = {
    "text": ".text",
    "train": ".train.inter",
    "valid": ".valid.inter",
    "test": ".test.inter",
    "item2index": ".item2index",
    "user2index": ".user2index",
}


class DataError(Exception):
    """A data file a user supplied is missing or malformed.

    ``str(err)`` is one line, ``"{path}:{line}: {msg}"`` (``"{path}: {msg}"`` when the problem is
    not on one line), ready for a CLI to print before exiting non-zero.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, msg: str) -> None:
        self.path = Path(path)
        self.line = line
        self.msg = msg
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {msg}")


@dataclass(frozen=True)
class Example:
    """One next-item prediction: ``history`` (item ids, oldest first) and the ``target`` item."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass
class Dataset:
    """A loaded data set; see the module docstring.

    Attributes:
        name: the folder name (or the RecBole file prefix).
        root: the folder it was loaded from.
        products: the catalog, by item id.
        users: every user id in file order, including users with no interactions.
        sequences: each user's full chronological item-id sequence (``[]`` for a cold-start user).
        splits: ``"train"``, ``"valid"`` and ``"test"`` lists of examples, in file order.
    """

    name: str
    root: Path
    products: dict[str, Product]
    users: list[str]
    sequences: dict[str, list[str]]
    splits: dict[str, list[Example]] = field(default_factory=dict)
    # What the loader changed while reading, one line each (a truncated category path, control
    # characters removed from a product's text), for the CLI to print as a note.
    notes: list[str] = field(default_factory=list)

    def examples(self, split: str) -> list[Example]:
        """The examples of one split (``"train"``, ``"valid"`` or ``"test"``)."""
        if split not in self.splits:
            raise DataError(
                self.root, None, f"unknown split {split!r}; choose one of {', '.join(SPLITS)}"
            )
        return self.splits[split]


# ---------------------------------------------------------------------------------------------
# Item text


def parse_item_text(text: str, known_categories: Collection[str] = ()) -> tuple[str, str, str]:
    """Split a UniSRec item text ``"<title>. <category>. <brand>. "`` into its three parts.

    Titles and brands may contain ``". "`` themselves ("1.88 in. x 35 yd.", "Mr. Heater",
    "J.V. Converting"); the category never does (its levels are joined by spaces). The rule:
    drop the one trailing ``". "``, split on ``". "``; with exactly three parts that is the answer.
    With more, the category is the one segment that (in order of preference) is one of
    ``known_categories``, starts with their common root (e.g. ``"Industrial & Scientific "``), or
    is empty (an item without a category); failing all three, the title takes the extra segments.
    :func:`load_recbole` passes the categories of the file's unambiguous lines as
    ``known_categories``; on the bundled set this splits all 4,385 lines as a reader would.

    Args:
        text: the item text.
        known_categories: category strings seen on unambiguous lines; optional hints.

    Returns:
        ``(title, category, brand)``, each stripped; category and brand may be empty.

    Raises:
        ValueError: fewer than three parts.
    """
    parts = _segments(text)
    if len(parts) < 3:
        raise ValueError(
            f"item text has {len(parts)} part(s), expected '<title>. <category>. <brand>. ': "
            f"{text[:80]!r}"
        )
    if len(parts) == 3:
        k = 1
    else:
        k = _category_segment(parts, known_categories)
    title = ". ".join(parts[:k]).strip()
    brand = ". ".join(parts[k + 1 :]).strip()
    return title, parts[k].strip(), brand


def _segments(text: str) -> list[str]:
    """``text`` without its one trailing ``". "``, split on ``". "``."""
    body = text.rstrip()
    if body.endswith("."):
        body = body[:-1]
    return body.split(". ")


def _category_segment(parts: list[str], known_categories: Collection[str]) -> int:
    """Index of the category among ``parts`` (len > 3); see :func:`parse_item_text`."""
    candidates = range(1, len(parts) - 1)
    known = [k for k in candidates if parts[k] in known_categories]
    if known:
        return known[0]
    # The root the known categories share, cut at a word boundary ("Industrial & Scientific ").
    root = os.path.commonprefix(list(known_categories)) if len(known_categories) > 1 else ""
    root = root[: root.rfind(" ") + 1]
    if root.strip():
        rooted = [k for k in candidates if parts[k].startswith(root)]
        if rooted:
            return rooted[0]
    empty = [k for k in candidates if not parts[k].strip()]
    if empty:
        return empty[-1]
    return len(parts) - 2


# ---------------------------------------------------------------------------------------------
# Splits


def leave_one_out(
    users: list[str],
    sequences: dict[str, list[str]],
    *,
    max_history: int | None = DEFAULT_MAX_HISTORY,
) -> dict[str, list[Example]]:
    """Leave-one-out splits, exactly as the UniSRec/RecBole recipe wrote the bundled set.

    Per user, for a sequence ``s`` of ``n`` items: ``test`` is ``s[:-1] -> s[-1]`` (n >= 2),
    ``valid`` is ``s[:-2] -> s[-2]`` (n >= 3), ``train`` is every prefix of ``s[:-2]`` of length
    ``k >= 1`` predicting ``s[k]``, longest prefix first (n >= 4). Histories keep their last
    ``max_history`` items. Users are taken in ``users`` order.
    """

    def clip(history: list[str]) -> tuple[str, ...]:
        if max_history is not None and len(history) > max_history:
            history = history[-max_history:]
        return tuple(history)

    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for user in users:
        seq = sequences.get(user, [])
        n = len(seq)
        for k in range(n - 3, 0, -1):
            splits["train"].append(Example(user, clip(seq[:k]), seq[k]))
        if n >= 3:
            splits["valid"].append(Example(user, clip(seq[:-2]), seq[-2]))
        if n >= 2:
            splits["test"].append(Example(user, clip(seq[:-1]), seq[-1]))
    return splits


# ---------------------------------------------------------------------------------------------
# Loaders


def load_dataset(root: str | os.PathLike[str]) -> Dataset:
    """Load a data-set folder, detecting its format.

    ``products.jsonl`` present -> :func:`load_jsonl`; else RecBole files -> :func:`load_recbole`.

    Raises:
        DataError: the folder does not exist or holds neither format.
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(path, None, "data-set folder does not exist")
    if (path / "products.jsonl").exists():
        return load_jsonl(path)
    if _recbole_prefixes(path):
        return load_recbole(path)
    raise DataError(
        path,
        None,
        "not a data-set folder: expected products.jsonl + sequences.jsonl, or RecBole files "
        "<prefix>.text, <prefix>.{train,valid,test}.inter, <prefix>.item2index, "
        "<prefix>.user2index",
    )


def _recbole_prefixes(root: Path) -> set[str]:
    prefixes = set()
    for child in root.iterdir():
        for suffix in _RECBOLE_SUFFIXES.values():
            if child.name.endswith(suffix) and len(child.name) > len(suffix):
                prefixes.add(child.name[: -len(suffix)])
                break
    return prefixes


def _limit(env: str, default: int, unit: str = "bytes") -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(Path(env), None, f"must be a positive number of {unit}, got {raw!r}")
    return value


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); blank lines are skipped.

    Raises:
        DataError: the file is larger than ``$QUERYAGENT_MAX_FILE_BYTES``, a line is longer than
            ``$QUERYAGENT_MAX_LINE_BYTES`` (read no further than the limit), or not UTF-8.
    """
    max_file = _limit(MAX_FILE_BYTES_ENV, DEFAULT_MAX_FILE_BYTES)
    max_line = _limit(MAX_LINE_BYTES_ENV, DEFAULT_MAX_LINE_BYTES)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DataError(path, None, f"cannot read ({err.strerror or err})") from None
    if size > max_file:
        raise DataError(
            path,
            None,
            f"file is {size:,} bytes, over the limit of {max_file:,} "
            f"(raise it with {MAX_FILE_BYTES_ENV})",
        )
    with path.open("rb") as f:
        number = 0
        while raw := f.readline(max_line + 2):  # +2: room for a CRLF ending a line at the limit
            number += 1
            body = raw.rstrip(b"\r\n")
            if len(body) > max_line:
                raise DataError(
                    path,
                    number,
                    f"line is over the limit of {max_line:,} bytes "
                    f"(raise it with {MAX_LINE_BYTES_ENV})",
                )
            if number == 1 and body.startswith(b"\xef\xbb\xbf"):
                body = body[3:]  # a UTF-8 byte-order mark (Windows editors write one)
            try:
                line = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, number, f"not UTF-8 text ({err.reason})") from None
            if line.strip():
                yield number, line


def check_id(path: Path, number: int | None, kind: str, value: str) -> None:
    """Refuse an id the memory cannot key by: empty, or with ``.`` or NUL in a user id.

    A user id becomes a LangGraph store namespace label (``("queryagent", "events", user_id)``),
    which may not be empty nor contain ``.`` or NUL; an item id is a Chroma record id, which may
    not be empty. Checked while loading, so a bad id is one line before anything is written.

    Raises:
        DataError: naming the file and line.
    """
    if not value.strip():
        raise DataError(path, number, f"empty {kind} id")
    if "\x00" in value:
        raise DataError(path, number, f"{kind} id {value!r} contains a NUL byte")
    if kind == "user" and "." in value:
        raise DataError(
            path,
            number,
            f"user id {value!r} contains '.', which the memory store cannot key by "
            "(LangGraph namespace labels exclude '.'); rename the user, e.g. '.' -> '_'",
        )


# A category path longer than this is cut at a word boundary while loading (issue 25: a
# 10,000-word category passed the 1 MiB line limit and made every prompt and the query vocabulary
# unbounded). The bundled set's longest is 754 characters (128 words).
MAX_CATEGORY_CHARS_ENV = "QUERYAGENT_MAX_CATEGORY_CHARS"
DEFAULT_MAX_CATEGORY_CHARS = 1024

# Terminal escape sequences (CSI ``ESC [ ... final``, OSC ``ESC ] ... BEL|ST``, two-byte ``ESC x``),
# then any other C0/C1 control character: product text is shown in prompts, queries and
# terminals, and ``\x1b[31m`` left ``31m`` in the query vocabulary.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clearing the screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: the window title, hyperlinks
    r"|\x1b[@-_]"  # any other two-byte escape
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences; other control characters become spaces."""
    if not _CONTROL.search(text):
        return text
    return " ".join(_CONTROL.sub(" ", _ESCAPE_SEQUENCE.sub("", text)).split())


def _clean_product(product: Product, path: Path, number: int, notes: list[str]) -> Product:
    """The product with clean text fields and a bounded category path; each change noted."""
    fields = {f: getattr(product, f) for f in ("title", "category", "brand")}
    cleaned = {f: clean_text(v) for f, v in fields.items()}
    if cleaned != fields:
        notes.append(
            f"{path}:{number}: item {product.item_id!r}: control characters removed from its "
            f"{', '.join(f for f in fields if cleaned[f] != fields[f])}"
        )
    limit = _limit(MAX_CATEGORY_CHARS_ENV, DEFAULT_MAX_CATEGORY_CHARS, "characters")
    category = cleaned["category"]
    if len(category) > limit:
        cut = category[: limit + 1].rsplit(" ", 1)[0] if " " in category[:limit] else ""
        cleaned["category"] = (cut or category[:limit]).rstrip()
        notes.append(
            f"{path}:{number}: item {product.item_id!r}: category path of {len(category):,} "
            f"characters cut to {len(cleaned['category']):,} (the limit is {limit:,}; raise it "
            f"with {MAX_CATEGORY_CHARS_ENV})"
        )
    if cleaned == fields:
        return product
    return product.model_copy(update=cleaned)


def _columns(path: Path, number: int, line: str, n: int) -> list[str]:
    cols = line.split("\t")
    if len(cols) != n:
        raise DataError(path, number, f"expected {n} tab-separated columns, found {len(cols)}")
    return cols


def _recbole_body(path: Path, n_columns: int) -> Iterator[tuple[int, list[str]]]:
    """The rows of a RecBole atomic file, after checking its ``name:type`` header line."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise DataError(path, None, "empty file (expected a RecBole header line)")
    header = _columns(path, first[0], first[1], n_columns)
    if not all(":" in name for name in header):
        raise DataError(
            path, first[0], f"expected a RecBole header line (name:type), got {first[1]!r}"
        )
    for number, line in lines:
        yield number, _columns(path, number, line, n_columns)


def _index_file(path: Path, kind: str) -> dict[int, str]:
    """A RecBole ``*2index`` file (``real id<TAB>integer``, no header) -> integer to real id."""
    by_index: dict[int, str] = {}
    seen: set[str] = set()
    for number, line in _lines(path):
        real, index = _columns(path, number, line, 2)
        check_id(path, number, kind, real)
        idx = _int(path, number, index)
        if real in seen:
            raise DataError(path, number, f"duplicate id {real!r}")
        if idx in by_index:
            raise DataError(path, number, f"duplicate index {idx}")
        seen.add(real)
        by_index[idx] = real
    return by_index


def _int(path: Path, number: int, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(path, number, f"expected an integer id, got {token!r}") from None


def load_recbole(root: str | os.PathLike[str]) -> Dataset:
    """Load a RecBole/UniSRec folder (the bundled Amazon set's format).

    Files, for any single ``<prefix>``: ``<prefix>.text`` (header; ``item_id`` = real id, item
    text), ``<prefix>.{train,valid,test}.inter`` (header; integer user, space-separated integer
    history, integer target), ``<prefix>.item2index`` and ``<prefix>.user2index`` (no header; real
    id, integer). A user's full sequence is its test history plus the test target; where the
    recipe capped that history at 50 items, the earliest items are restored from the train split.

    Raises:
        DataError: no or several prefixes, a missing file, or a malformed line (wrong column
            count, non-integer or unknown integer id, unknown item, duplicate id).
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(path, None, "data-set folder does not exist")
    prefixes = _recbole_prefixes(path)
    if not prefixes:
        raise DataError(path, None, "no RecBole files (<prefix>.text, <prefix>.test.inter, ...)")
    if len(prefixes) > 1:
        raise DataError(
            path, None, f"several RecBole prefixes ({', '.join(sorted(prefixes))}); keep one"
        )
    prefix = prefixes.pop()
    files = {key: path / f"{prefix}{suffix}" for key, suffix in _RECBOLE_SUFFIXES.items()}
    for file in files.values():
        if not file.is_file():
            raise DataError(file, None, "missing file")

    items = _index_file(files["item2index"], "item")
    users_by_index = _index_file(files["user2index"], "user")

    # Item text, in two passes: the unambiguous lines (exactly three parts) give the categories
    # that settle the lines whose title or brand contains ". " (see parse_item_text).
    rows = list(_recbole_body(files["text"], 2))
    known = {parse_item_text(text)[1] for _, (_, text) in rows if len(_segments(text)) == 3}
    known.discard("")
    products: dict[str, Product] = {}
    notes: list[str] = []
    for number, (item_id, text) in rows:
        check_id(files["text"], number, "item", item_id)
        if item_id in products:
            raise DataError(files["text"], number, f"duplicate item id {item_id!r}")
        try:
            title, category, brand = parse_item_text(text, known)
        except ValueError as err:
            raise DataError(files["text"], number, str(err)) from None
        product = Product(item_id=item_id, title=title, category=category, brand=brand)
        products[item_id] = _clean_product(product, files["text"], number, notes)

    def item(file: Path, number: int, token: str) -> str:
        idx = _int(file, number, token)
        if idx not in items:
            raise DataError(file, number, f"unknown item index {idx} (not in {prefix}.item2index)")
        real = items[idx]
        if real not in products:
            raise DataError(file, number, f"item {real!r} has no line in {prefix}.text")
        return real

    users = list(users_by_index.values())  # user2index file order
    sequences: dict[str, list[str]] = {user: [] for user in users}
    test_lines: dict[str, int] = {}
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        file = files[split]
        examples: list[Example] = []
        for number, (user_tok, history_tok, target_tok) in _recbole_body(file, 3):
            uidx = _int(file, number, user_tok)
            if uidx not in users_by_index:
                raise DataError(
                    file, number, f"unknown user index {uidx} (not in {prefix}.user2index)"
                )
            ex = Example(
                users_by_index[uidx],
                tuple(item(file, number, tok) for tok in history_tok.split()),
                item(file, number, target_tok),
            )
            if split == "test":
                if ex.user_id in test_lines:
                    raise DataError(file, number, f"user {ex.user_id!r} has a second test row")
                test_lines[ex.user_id] = number
                sequences[ex.user_id] = [*ex.history, ex.target]
            examples.append(ex)
        splits[split] = examples
    _restore_capped_prefixes(sequences, splits["train"], files["test"], test_lines)

    return Dataset(
        name=prefix,
        root=path,
        products=products,
        users=users,
        sequences=sequences,
        splits=splits,
        notes=notes,
    )


def _restore_capped_prefixes(
    sequences: dict[str, list[str]],
    train: list[Example],
    test_file: Path,
    test_lines: dict[str, int],
) -> None:
    """Put back the earliest items of users whose test history was capped (in place).

    The recipe keeps only the last 50 items of a history, so for a user with more than 51
    interactions ``test.history + [test.target]`` misses the oldest ones (3 users, 43 items in the
    bundled set). They are still in the train split, whose rows for a user are the prefixes of
    length ``n-3, ..., 1`` (longest first): the shortest row's history is the first item and the
    row targets are the items after it. Leaving them out would misalign positions (a profile cut
    at ``before=len(example.history)`` would then see the future), so they are restored.
    """
    rows: dict[str, list[Example]] = {}
    for ex in train:
        rows.setdefault(ex.user_id, []).append(ex)
    for user, user_rows in rows.items():
        seq = sequences.get(user, [])
        missing = len(user_rows) + 3 - len(seq)
        if missing <= 0 or not seq:
            continue
        ascending = user_rows[::-1]
        full = [*ascending[0].history[:1], *(ex.target for ex in ascending)]
        if len(full) < missing or full[missing : len(full)] != seq[: len(full) - missing]:
            raise DataError(
                test_file,
                test_lines.get(user),
                f"user {user!r}: the test history does not continue the train rows",
            )
        sequences[user] = [*full[:missing], *seq]


class _SequenceRecord(BaseModel):
    user_id: str
    items: list[str]


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def _jsonl(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, BaseModel]]:
    for number, line in _lines(path):
        try:
            yield number, model.model_validate_json(line)
        except ValidationError as err:
            raise DataError(path, number, _validation_message(err)) from None


def load_jsonl(
    root: str | os.PathLike[str], *, max_history: int | None = DEFAULT_MAX_HISTORY
) -> Dataset:
    """Load a JSON-lines folder: ``products.jsonl`` and ``sequences.jsonl``.

    ``products.jsonl``: one ``{"item_id", "title", "category": "", "brand": ""}`` per line.
    ``sequences.jsonl``: one ``{"user_id", "items": [item ids, oldest first]}`` per line (``[]``
    for a user with no interactions). Splits come from :func:`leave_one_out`.

    Raises:
        DataError: a missing file, a line that is not a valid record, a duplicate id, or an item
            id in a sequence that is not in ``products.jsonl``.
    """
    path = Path(root)
    if not path.is_dir():
        raise DataError(path, None, "data-set folder does not exist")
    products_file, sequences_file = path / "products.jsonl", path / "sequences.jsonl"
    for file in (products_file, sequences_file):
        if not file.is_file():
            raise DataError(file, None, "missing file")

    products: dict[str, Product] = {}
    notes: list[str] = []
    for number, record in _jsonl(products_file, Product):
        assert isinstance(record, Product)
        check_id(products_file, number, "item", record.item_id)
        if record.item_id in products:
            raise DataError(products_file, number, f"duplicate item id {record.item_id!r}")
        products[record.item_id] = _clean_product(record, products_file, number, notes)

    sequences: dict[str, list[str]] = {}
    for number, record in _jsonl(sequences_file, _SequenceRecord):
        assert isinstance(record, _SequenceRecord)
        check_id(sequences_file, number, "user", record.user_id)
        if record.user_id in sequences:
            raise DataError(sequences_file, number, f"duplicate user id {record.user_id!r}")
        for position, item_id in enumerate(record.items):
            if item_id not in products:
                raise DataError(
                    sequences_file,
                    number,
                    f"unknown item id {item_id!r} at items[{position}] (not in products.jsonl)",
                )
        sequences[record.user_id] = list(record.items)

    users = list(sequences)
    return Dataset(
        name=path.name,
        root=path,
        products=products,
        users=users,
        sequences=sequences,
        splits=leave_one_out(users, sequences, max_history=max_history),
        notes=notes,
    )


def target_position(dataset: Dataset, ex: Example, split: str) -> int:
    """Where ``ex.target`` sits in the shopper's full sequence: the memory sees items before it.

    Not ``len(ex.history)`` in general: the UniSRec files cap histories at 50 items, while the
    memory holds the whole sequence. ``test`` and ``valid`` targets are the last and second to
    last items; a ``train`` row is ``sequence[:k] -> sequence[k]`` with the history clipped to its
    last items, so ``k`` is the first position from ``len(history)`` on where the row matches.

    Raises:
        DataError: the example does not line up with the sequence.
    """
    sequence, history = dataset.sequences[ex.user_id], ex.history

    def lines_up(position: int) -> bool:
        before = tuple(sequence[:position])
        return sequence[position] == ex.target and (
            not history or before[-len(history) :] == history
        )

    if split == "train":
        candidates = range(len(history), len(sequence))
    else:
        candidates = range(len(sequence) - (1 if split == "test" else 2), len(sequence))[:1]
    for position in candidates:
        if position >= 0 and lines_up(position):
            return position
    raise DataError(
        dataset.root, None, f"user {ex.user_id}: the {split} example does not match the sequence"
    )
