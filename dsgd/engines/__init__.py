"""The DSGD engines: the same stratified SGD run in the driver (:mod:`dsgd.engines.local`) or on Spark
(:mod:`dsgd.engines.spark`: the shuffle exchange, and the barrier exchange of
:mod:`dsgd.engines.barrier` over :mod:`dsgd.engines.peer_exchange`). All give bit-identical factors.
"""
