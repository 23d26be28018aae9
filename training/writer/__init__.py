"""The writer: the language model's role in the agent. It writes the query text the shopper sees
for the intent the check picked (``agent.writing``), trained on the training split only:

1. ``queryagent-train sft --role write``: supervised cold start on ``training.writer.rows``
   (the graph's writing prompt -> the history-supported text that retrieved the real next
   purchase best, among the intent's last words alone or led by one of the shopper's brands);
2. ``queryagent-train write-grpo``: GRPO on the written text's dense reward
   (``training.rewards``: the next purchase's rank in the text's results, the share of them in
   the intent's category, brevity), with a held-out reward on ``valid`` shoppers every N steps
   (``training.writer.heldout``).

Rewards search the catalog with the fused search fitted on the sequences cut before the
``valid`` targets (``graphs.offline.runner.fit_sequences``), so neither stage sees a ``valid``
or ``test`` purchase.
"""
