"""The ``train``, ``test``, ``test-robust``, ``predict`` and ``report`` commands on IMDL-BenCo's own machinery.

One module per command: ``training``, ``evaluation``, ``robustness``, ``prediction``,
``comparison`` (``report``). They
share ``runtime`` (process group, device, seeds), ``models`` (building a model, rebuilding
one from a checkpoint, its weight-source flags), ``checkpoints`` (finding, reading once,
saving, the best one, pruning, resuming), ``data`` (datasets, loaders), ``evaluators`` (the
paper's protocol on BenCo's tester) and ``reporting`` (what is printed and written). Nothing
here imports the CLI layer (``cli``, ``flags``, ``config``, ``checks``), which parses the flags;
figures are drawn by ``imdlbenco_maskclip.figures``.
"""
