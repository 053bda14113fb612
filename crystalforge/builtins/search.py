"""Built-in search strategies: sampling (random, top-k, top-p, greedy) and MCTS."""

from ..hookspecs import hookimpl

SAMPLING = {
    "random": ("RandomSampling", "temperature sampling over the full distribution"),
    "top-k": ("TopKSampling", "sample among the k most likely tokens"),
    "top-p": ("TopPSampling", "nucleus sampling: smallest token set with probability >= p"),
    "greedy": ("GreedyDecoding", "always take the most likely token (deterministic)"),
}

MCTS = {
    "puct": ("PUCTSearch", "Monte Carlo tree search with PUCT selection (scorer-guided)"),
    "uct": ("UCTSearch", "Monte Carlo tree search with UCT selection (scorer-guided)"),
    "mcts-greedy": ("GreedyTreeSearch", "Monte Carlo tree search with epsilon-greedy selection"),
}


@hookimpl
def register_search_strategies(register):
    for name, (cls, description) in SAMPLING.items():
        register(name, f"crystalforge.search.sampling:{cls}", description=description)
    for name, (cls, description) in MCTS.items():
        register(name, f"crystalforge.search.mcts:{cls}", description=description)
