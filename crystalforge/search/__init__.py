"""Search strategies: how token sequences are decoded from a model.

``decode`` is the batched KV-cache engine every strategy runs on (the sliding context
window, the end-of-CIF rule); ``pickers`` choose each next token (temperature, top-k,
top-p, greedy); ``logits`` holds the masks that keep CIF text plausible (composition,
grammar, stoichiometry), following the line grammar of ``grammar``; ``sampling`` the
random / top-k / top-p / greedy strategies; ``mcts`` the tree searches; ``base`` the
:class:`Sample` they return.
"""
