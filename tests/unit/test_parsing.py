import pytest

from agent.parsing import MAX_QUERY_WORDS, parse_query


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("Query: 3D printer filament", "3d printer filament"),
        ('query: "pla filament 1.75mm"', "pla filament 1.75mm"),
        ("Sure!\nQuery: lab glassware beakers.", "lab glassware beakers"),
        ("**Query:** safety goggles", "safety goggles"),
        ("nitrile gloves", "nitrile gloves"),
        ("  \n  Search query = soldering iron tips\nmore text", "soldering iron tips"),
    ],
)
def test_parse_accepts_queries(completion: str, expected: str) -> None:
    parsed = parse_query(completion)
    assert parsed.ok
    assert parsed.query == expected
    assert parsed.error is None


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("Query: ***", "no query text"),
        ("Query: " + " ".join(["word"] * (MAX_QUERY_WORDS + 1)), "too long"),
        ("Query: 2 to 6 words: 2 to 6 words:", "echoes the prompt"),
        ("Shopper Memory:\nMG Chemicals 4860P", "echoes the prompt"),
        ("Identity: Buys mostly filament", "echoes the prompt"),
    ],
)
def test_parse_rejects_non_queries(completion: str, reason: str) -> None:
    parsed = parse_query(completion)
    assert not parsed.ok
    assert parsed.query is None
    assert reason in (parsed.error or "")


def test_tagged_line_preferred_over_first_line() -> None:
    assert parse_query("I think the shopper wants\nQuery: drill bits").query == "drill bits"
