"""Coverage-guided fuzzing (atheris / libFuzzer) of every cevit entry point that reads untrusted bytes.

One harness module per target (:data:`fuzz.targets.TARGETS`), each with ``seed(folder)`` (writes valid inputs,
generated at run time), ``load()`` (imports the code under test, instrumented) and ``one_input(data)`` (runs the
reader on the bytes). The contract: only :class:`cevit.errors.CevitError` subclasses may escape a reader (for the
HTTP upload parser: an ``ApiError`` with a 4xx status); any other exception is a bug. Run with
``python -m fuzz.run TARGET --runs N`` (``all`` for every target); needs the ``fuzz`` extra (atheris).
"""
