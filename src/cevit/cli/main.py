"""``cevit`` entry point: sub-commands, logging set-up and the mapping of errors to exit codes.

Exit codes: 0 success; 1 some inputs failed (analyze) or a runtime error; 2 usage or configuration error;
3 model or checkpoint error (e.g. no trained weights bundled, unreadable checkpoint); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cevit import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    from cevit.cli import (
        analyze,
        calibrate,
        convert,
        evaluate,
        export,
        extract_faces,
        info,
        sbi_preview,
        scan,
        serve,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="cevit",
        description="Face-deepfake detection with the Cross Efficient ViT.",
    )
    parser.add_argument("--version", action="version", version=f"cevit {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (analyze, scan, serve, evaluate, extract_faces, train, calibrate, sbi_preview, info, convert, export):
        module.add_parser(sub)
    for command in sub.choices.values():  # `cevit analyze ... --debug` works as well as `cevit --debug analyze ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="verbose logging and full tracebacks")  # fmt: skip
    return parser


def _error_code(exc: BaseException) -> int:
    from cevit.errors import CheckpointError, ConfigError, ModelError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, (CheckpointError, ModelError)):
        return EXIT_MODEL
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if args.debug else "cevit: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # Python warnings of the libraries underneath (Pillow's "Corrupt EXIF data", torch's unpickler notes) are
    # noise to a user of the command: they go through logging, shown with --debug only.
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    previous_level = warnings_logger.level
    warnings_logger.setLevel(logging.DEBUG if args.debug else logging.ERROR)
    try:
        return _run(args)
    finally:
        logging.captureWarnings(False)
        warnings_logger.setLevel(previous_level)


def _run(args: argparse.Namespace) -> int:
    from cevit.errors import CevitError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("cevit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CevitError as exc:
        if args.debug:
            raise
        print(f"cevit: error: {exc}", file=sys.stderr)
        return _error_code(exc)
    except Exception as exc:  # noqa: BLE001 - never a traceback to the user unless --debug
        if args.debug:
            raise
        print(f"cevit: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
