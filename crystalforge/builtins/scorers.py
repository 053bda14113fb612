"""Built-in scorers: a seeded random scorer and a ZMQ client (CrystaLLM/ALIGNN protocol)."""

from ..hookspecs import hookimpl


@hookimpl
def register_scorers(register):
    register("random", "crystalforge.scoring.random:RandomScorer",
             description="uniform random score in [0, 1) (seeded), for testing pipelines")
    register("zmq", "crystalforge.scoring.zmq_client:ZMQScorer",
             description="score over ZeroMQ REQ/REP (CrystaLLM's ALIGNN server protocol)")
