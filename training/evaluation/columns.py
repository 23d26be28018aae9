"""The columns of the evaluation's markdown table, shared by ``report`` (which writes it) and
``tables`` (which regenerates the docs' tables with the standard library alone)."""

TABLE_METRICS = (
    "q_em",
    "rouge_l",
    "i_hit@1",
    "i_hit@10",
    "ndcg@10",
    "cons@1",
    "cons@10",
    "i_hit@10_right",
    "format_valid",
    "refinements",
    "latency_s",
)

# The query text's columns (``agent.writing``): reports written before it lack them, so the docs'
# tables show them only when asked (``columns=...``), as "n/a" for such a report.
TEXT_METRICS = ("text_words", "text_differs")
