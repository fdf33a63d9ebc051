"""``python -m fer_mm.report RUN_DIR [RUN_DIR ...]``: folds -> tables, comparisons, plots.

Reads the fold folders under each RUN_DIR (``metrics.json`` + ``predictions.csv``), groups them by
experiment and protocol, and writes ``results.md``, ``results.json``, a confusion matrix per
experiment and a per-fold accuracy plot. Every number is recomputed from the per-clip
predictions; the report never re-runs a model.

On the synthetic twin each experiment is also set against its Bayes ceiling: the best accuracy a
model can expect on its test clips from the modalities it sees, known from the twin's generation
parameters (``fer_mm.data.twins.displays``), with its sampling error and the Bayes rule's accuracy on
those very clips. Comparisons read "B minus A", with the richer input set as B where one contains
the other; their paired test runs over test actors, Holm-corrected across the report.

Every fold records the environment it ran under (package versions, the lock's hash, the commit);
the report lists them and warns where runs it sets side by side were made under different ones.
"""
