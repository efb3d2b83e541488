"""The ``train``, ``test`` and ``test-robust`` commands on IMDL-BenCo's own machinery.

``options`` (flags, YAML), ``data`` (datasets, loaders), ``evaluators`` (the paper's
protocol on BenCo's tester), ``reporting`` (metrics / robustness files), ``runtime``
(process group, model, checkpoints) and one module per command: ``training``,
``evaluation``, ``robustness``.
"""
