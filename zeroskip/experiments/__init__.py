"""Applications built on the library: the experiment runners that regenerate the measured
results in ``docs/`` (``python -m zeroskip.experiments.results``, what ``nox -s results``
runs). Not part of the library API (:mod:`zeroskip.sw`)."""
