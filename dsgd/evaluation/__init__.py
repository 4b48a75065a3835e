"""The evaluation harness: prequential DCG of popularity, online and batch models on a replayed stream
(:mod:`dsgd.evaluation.harness`, its models in :mod:`dsgd.evaluation.models`), the data-set loaders,
the synthetic stream generator, plots and reports. The protocol is written down in docs/evaluation.md.
"""
