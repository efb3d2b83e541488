"""The ``train``, ``test``, ``test-robust`` and ``predict`` commands on IMDL-BenCo's own machinery.

One module per command: ``training``, ``evaluation``, ``robustness``, ``prediction``. They
share ``runtime`` (process group, device, seeds), ``models`` (building a model, its
weight-source flags), ``checkpoints`` (finding, reading, loading, the best one, pruning,
resuming), ``data`` (datasets, loaders), ``evaluators`` (the paper's protocol on BenCo's
tester) and ``reporting`` (what is printed and written). Flags are parsed by
``imdlbenco_maskclip.flags``; figures are drawn by ``imdlbenco_maskclip.figures``.
"""
