import pytest

from agent.context import Context


def test_defaults_are_valid() -> None:
    ctx = Context()
    assert ctx.max_refinements >= 0
    assert ctx.fit_threshold is None or 0 <= ctx.fit_threshold <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_refinements": -1},
        {"top_k": 0},
        {"fit_threshold": 1.5},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"max_new_tokens": 0},
    ],
)
def test_bad_values_say_what_is_wrong(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Context(**kwargs)


def test_from_mapping_rejects_unknown_keys() -> None:
    assert Context.from_mapping({"top_k": 3}).top_k == 3
    with pytest.raises(ValueError, match="unknown context keys"):
        Context.from_mapping({"topk": 3})
