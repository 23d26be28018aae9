"""The catalog query trie and constrained decoding over it (real beam search on a tiny LM)."""

from __future__ import annotations

import pytest

from agent.drafting.trie import QueryTrie
from tests.helpers.fakes import WordTokenizer

QUERIES = ["duct tape", "duct tape silver", "glass beakers", "pla filament"]


def test_every_path_is_a_query_and_its_end_allows_only_eos() -> None:
    trie = QueryTrie.build(WordTokenizer(), QUERIES)
    for query, ids in trie.sequences.items():
        assert ids[-1] == trie.eos_id
        for n in range(len(ids)):
            assert ids[n] in trie.allowed(ids[:n])
        assert trie.query(ids) == query
    duct = trie.completion_ids("duct tape")
    assert duct is not None
    # after "Query: duct tape" the query may end or go on to "silver"; after "silver" only end
    after = set(trie.allowed(duct[:-1]))
    assert trie.eos_id in after and len(after) == 2
    longer = trie.completion_ids("duct tape silver")
    assert longer is not None and trie.allowed(longer[:-1]) == [trie.eos_id]
    assert trie.query([999]) is None


def test_choices_mark_the_tokens_the_trie_left_open() -> None:
    trie = QueryTrie.build(WordTokenizer(), QUERIES)
    longer = trie.completion_ids("duct tape silver")
    assert longer is not None and len(longer) == 5  # "Query:" duct tape silver <eos>
    # forced: the answer prefix (every query has it), "tape" after "duct", eos after "silver";
    # choices: the first word, and ending after "tape" or going on to "silver"
    assert trie.choices(longer) == [0, 1, 0, 1, 0]
    assert trie.choices(trie.completion_ids("duct tape") or []) == [0, 1, 0, 1]
    assert trie.choices(trie.completion_ids("pla filament") or []) == [0, 1, 0, 0]
    assert trie.choices([]) == []


def test_a_catalog_change_changes_the_key() -> None:
    a = QueryTrie.build(WordTokenizer(), QUERIES)
    b = QueryTrie.build(WordTokenizer(), QUERIES[:-1])
    assert a.key != b.key and len(b) == len(QUERIES) - 1
    assert QueryTrie.build(WordTokenizer(), list(reversed(QUERIES))).key == a.key


def _walk(trie: QueryTrie, prefix: tuple[int, ...] = ()) -> set[str]:
    """Every query a decoder following ``allowed`` can finish."""
    found = set()
    for token in trie.allowed(prefix):
        path = (*prefix, token)
        if token == trie.eos_id:
            query = trie.query(path)
            if query is not None:
                found.add(query)
        else:
            found |= _walk(trie, path)
    return found


def test_an_excluded_query_cannot_be_written_and_the_rest_still_can() -> None:
    trie = QueryTrie.build(WordTokenizer(), QUERIES)
    assert _walk(trie) == set(QUERIES)
    # "duct tape" is a prefix of "duct tape silver": excluding it keeps the longer one.
    view = trie.without(["duct tape", "glass beakers"])
    assert _walk(view) == {"duct tape silver", "pla filament"}
    assert len(view) == 2 and view.key == trie.key
    assert _walk(trie) == set(QUERIES)  # the trie itself is untouched
    assert _walk(trie.without(["duct tape silver", "duct tape"])) == {
        "glass beakers",
        "pla filament",
    }
    assert _walk(trie.without(QUERIES)) == set()
    assert trie.without([]) is trie and trie.without(["not a query"]) is trie
    once = trie.without(q for q in ["glass beakers"])  # any iterable, read once
    assert _walk(once) == set(QUERIES) - {"glass beakers"} and len(once) == len(QUERIES) - 1


@pytest.mark.integration
def test_constrained_beams_never_leave_the_trie(tiny_model_dir) -> None:
    """A random tiny LM would write anything; constrained, every beam is a catalog query, the
    beams are distinct, and their log-probabilities equal the teacher-forced scores."""
    from agent.drafting import HFDrafter
    from agent.drafting.constrained import GroundedHFDrafter

    drafter = GroundedHFDrafter(HFDrafter(str(tiny_model_dir), prefix_cache=False))
    queries = ["usb c cable", "usb c charger", "yoga mat", "coffee grinder", "usb c"]
    trie = drafter.trie(queries)
    prompts = [
        [{"role": "user", "content": "a shopper who buys tape"}],
        [{"role": "user", "content": "someone else entirely, with a longer memory text"}],
    ]
    beams = drafter.beams(prompts, trie, 3)
    assert len(beams) == 2
    for prompt, row in zip(prompts, beams, strict=True):
        assert row and len({b.query for b in row}) == len(row)
        assert all(b.query in queries for b in row)
        assert [b.logprob for b in row] == sorted((b.logprob for b in row), reverse=True)
        # The prompts run once before the beams (their cache repeated per beam); the shorter
        # prompt is left-padded, so this also checks its positions.
        scored = drafter.score([prompt], [[list(b.completion_token_ids) for b in row]])[0]
        assert scored == pytest.approx([b.logprob for b in row], abs=1e-3)
        alone = drafter.beams([prompt], trie, 3)[0]
        assert [b.query for b in alone] == [b.query for b in row]
    # One draft without sampling is greedy search, scored on the beams' scale (the model's own
    # softmax), and a query of the trie too.
    [[draft]] = drafter.beams(prompts[:1], trie, 1)
    assert draft.query in queries
    scored = drafter.score([prompts[0]], [[list(draft.completion_token_ids)]])[0]
    assert scored == pytest.approx([draft.logprob], abs=1e-3)
    best = beams[0][0]
    assert best.query in drafter.drafter.tokenizer.decode(list(best.completion_token_ids))


@pytest.mark.integration
def test_refinement_beams_reuse_their_draft_prompts_rows(tiny_model_dir) -> None:
    """A refinement prompt extends its draft prompt: with ``RowPrefixes`` it runs only its new
    tokens on the draft's kept keys/values, and gets the beams and scores it gets from scratch,
    in a batch where one row reuses a prefix and the other does not (padding in the middle)."""
    import torch

    from agent.drafting import HFDrafter
    from agent.drafting.constrained import constrained_beams
    from agent.drafting.prefix_cache import RowPrefixes
    from agent.drafting.trie import QueryTrie
    from agent.prompts import grounded_refine_messages

    drafter = HFDrafter(str(tiny_model_dir), prefix_cache=False)
    model, tokenizer = drafter.model, drafter.tokenizer
    queries = ["usb c cable", "usb c charger", "yoga mat", "coffee grinder", "usb c"]
    trie = QueryTrie.build(tokenizer, queries)
    drafts = [
        [{"role": "user", "content": "a shopper who buys tape"}],
        [{"role": "user", "content": "someone else entirely, with a longer memory text"}],
    ]
    store = RowPrefixes()
    first = constrained_beams(model, tokenizer, drafts, trie, 3, prefixes=store)
    assert first == constrained_beams(model, tokenizer, drafts, trie, 3)
    assert len(store) == 2 and store.hits == 0
    refine = [
        grounded_refine_messages(d, row[0].query, [("yoga mat", 0.01, ["a"])])
        for d, row in zip(drafts, first, strict=True)
    ]
    # Two rows extend kept prompts of different lengths, one is new.
    fresh = [refine[0], [{"role": "user", "content": "a third shopper"}], refine[1]]
    reused = constrained_beams(
        model, tokenizer, fresh, trie.without({"yoga mat"}), 3, prefixes=store
    )
    assert store.hits == 2
    assert store.reused_tokens == sum(len(row[0].prompt_token_ids) - 1 for row in first)
    plain = constrained_beams(model, tokenizer, fresh, trie.without({"yoga mat"}), 3)
    for a, b in zip(reused, plain, strict=True):
        assert [x.query for x in a] == [x.query for x in b]
        assert [x.prompt_token_ids for x in a] == [x.prompt_token_ids for x in b]
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)
    # Every refinement of a shopper extends the same draft prompt: a kept row stays kept.
    assert len(store) == 5  # two drafts, then the three rows of the refinement batch
    again = grounded_refine_messages(drafts[1], first[1][1].query, [("usb c", 0.02, ["b"])])
    [second] = constrained_beams(model, tokenizer, [again], trie, 3, prefixes=store)
    assert store.hits == 3
    assert [b.query for b in second] == [
        b.query for b in constrained_beams(model, tokenizer, [again], trie, 3)[0]
    ]
    # A store over its byte budget drops the least recently used rows.
    tiny = RowPrefixes(max_bytes=store.nbytes // 2)
    for ids, layers in list(store._kept.items()):
        tiny.keep(list(ids), layers)
    assert len(tiny) < len(store) and tiny.nbytes <= tiny.max_bytes
    assert all(isinstance(k, torch.Tensor) for k, _ in next(iter(store._kept.values())))


@pytest.mark.integration
def test_beams_over_one_copy_of_the_prompt_equal_the_repeated_rows(tiny_model_dir) -> None:
    """Beams (and samples) decoded over one copy of each prompt's keys/values (the shared-prefix
    attention) are the beams, scores and samples of the rows repeated per beam (float32), for
    left-padded prompts of different lengths, refinement prompts extending kept rows included."""
    import torch

    from agent.drafting import HFDrafter
    from agent.drafting.constrained import constrained_beams
    from agent.drafting.prefix_cache import RowPrefixes
    from agent.drafting.shared_prefix import ATTENTION
    from agent.drafting.trie import QueryTrie

    drafter = HFDrafter(str(tiny_model_dir), prefix_cache=False, dtype="float32")
    model, tokenizer = drafter.model, drafter.tokenizer
    queries = ["usb c cable", "usb c charger", "yoga mat", "coffee grinder", "usb c", "mat"]
    trie = QueryTrie.build(tokenizer, queries)
    prompts = [
        [{"role": "user", "content": "a shopper who buys tape"}],
        [{"role": "user", "content": "someone else entirely, with a much longer memory text"}],
        [{"role": "user", "content": "a third"}],
    ]
    plain = constrained_beams(model, tokenizer, prompts, trie, 4, share_prompt=False)
    shared = constrained_beams(model, tokenizer, prompts, trie, 4)
    assert model.config._attn_implementation == ATTENTION  # the shared path ran
    for a, b in zip(plain, shared, strict=True):
        assert [x.query for x in a] == [x.query for x in b]
        # Float32 sums in another order: a few ulps of a sum near -40 (2.3e-5 measured on the
        # 2-core dev machine), so relative to the sum, not absolute.
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], rel=2e-6)
    assert all(len(row) >= 2 for row in shared)
    # Samples (GRPO's group): the same draws from the same seed.
    torch.manual_seed(7)
    drawn = constrained_beams(model, tokenizer, prompts, trie, 4, 1.0, share_prompt=False)
    torch.manual_seed(7)
    again = constrained_beams(model, tokenizer, prompts, trie, 4, 1.0)
    assert [[x.query for x in r] for r in drawn] == [[x.query for x in r] for r in again]
    # Kept rows (a refinement's prompt extends its draft's) feed the shared cache too.
    store = RowPrefixes()
    constrained_beams(model, tokenizer, prompts, trie, 4, prefixes=store)
    longer = [[*p, {"role": "assistant", "content": "usb c"}] for p in prompts]
    reused = constrained_beams(model, tokenizer, longer, trie, 4, prefixes=store)
    assert store.hits == 3
    fresh = constrained_beams(model, tokenizer, longer, trie, 4, share_prompt=False)
    for a, b in zip(reused, fresh, strict=True):
        assert [x.query for x in a] == [x.query for x in b]
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)


@pytest.mark.integration
def test_the_start_every_prompt_shares_runs_once(tiny_model_dir) -> None:
    """Prompts that start alike (the draft prompt's system message): the shared start's keys and
    values are computed once and kept, each row runs only what follows it, and the beams and
    scores are those of the whole prompts run from scratch (float32), this batch and the next."""
    import os

    from agent.drafting import HFDrafter
    from agent.drafting.constrained import constrained_beams
    from agent.drafting.prefill import MIN_COMMON_PREFIX, prompt_ids
    from agent.drafting.prefix_cache import RowPrefixes
    from agent.drafting.trie import QueryTrie

    drafter = HFDrafter(str(tiny_model_dir), prefix_cache=False, dtype="float32")
    model, tokenizer = drafter.model, drafter.tokenizer
    trie = QueryTrie.build(tokenizer, ["usb c cable", "usb c charger", "yoga mat", "mat"])
    system = {"role": "system", "content": "You recommend the next search of one shopper. " * 3}
    shoppers = ["buys tape", "a much longer memory of cables and chargers", "yoga"]
    prompts = [[system, {"role": "user", "content": s}] for s in shoppers]
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    common = os.path.commonprefix([i[:-1] for i in ids])
    assert len(common) >= MIN_COMMON_PREFIX
    store = RowPrefixes()
    kept = constrained_beams(model, tokenizer, prompts, trie, 3, prefixes=store)
    assert common in store and store.hits == len(prompts)
    assert store.reused_tokens == len(common) * len(prompts)
    plain = constrained_beams(model, tokenizer, prompts, trie, 3, share_prompt=False)
    for a, b in zip(kept, plain, strict=True):
        assert [x.query for x in a] == [x.query for x in b]
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)
    # The next batch (other shoppers) starts from the kept shared start.
    others = [[system, {"role": "user", "content": s}] for s in ["gloves", "lab beakers"]]
    before = store.reused_tokens
    again = constrained_beams(model, tokenizer, others, trie, 3, prefixes=store)
    assert store.reused_tokens - before >= len(common) * len(others)
    assert [[x.query for x in r] for r in again] == [
        [x.query for x in r] for r in constrained_beams(model, tokenizer, others, trie, 3)
    ]
