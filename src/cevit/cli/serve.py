"""``cevit serve --weights PATH``: the HTTP API and web page (:mod:`cevit.api`) served by uvicorn.

Loads the model once before the server starts (so a bad checkpoint fails with exit code 3, like ``analyze``),
binds 127.0.0.1 by default, logs one JSON line per request to stderr. Also runnable on its own as
``python -m cevit.cli.serve ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cevit.cli.options import add_limit_options, limit_options

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the HTTP API (POST /v1/analyze) and the web page",
        description="Serve the HTTP API and the web page with uvicorn. The model is loaded once at start-up. "
        "Open http://HOST:PORT/ in a browser; API description at /docs and /openapi.json.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="checkpoint: a cevit .safetensors or the authors' .pth (default: bundled weights)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--workers", type=int, default=1, help="inference threads (default: 1)")
    p.add_argument("--queue-size", type=int, default=8,
                   help="requests admitted beyond the busy workers; more get 503 (default: 8)")  # fmt: skip
    p.add_argument(
        "--max-upload-mb", type=float, default=200, help="upload size limit in MB of 2^20 bytes (default: 200)"
    )
    p.add_argument("--max-temp-mb", type=float, default=None,
                   help="temporary disk space of all uploads at once in MB; an upload that would pass it gets 503 "
                   "(default: 1024, or --max-upload-mb when larger)")  # fmt: skip
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="close connections whose request line and headers are not complete after S seconds "
                        "(slow-header attacks; default 10)")  # fmt: skip
    p.add_argument("--upload-idle-timeout", type=float, default=30.0, metavar="S",
                   help="answer 408 when an upload pauses longer than S seconds (default: 30)")  # fmt: skip
    p.add_argument("--upload-timeout", type=float, default=600.0, metavar="S",
                   help="answer 408 when an upload takes longer than S seconds in all (default: 600)")  # fmt: skip
    p.add_argument("--api-key", default=os.environ.get("CEVIT_API_KEY") or None,
                   help="require this key in the X-API-Key header (default: $CEVIT_API_KEY; none)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--tmp-dir", default=None, help="folder for uploads in progress (default: a fresh private one)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="log level of the JSON logs on stderr (default: info)")  # fmt: skip
    add_limit_options(p)  # the resource policy per item, as for `cevit analyze`


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for cevit's and uvicorn's loggers (the access log is cevit's own)."""
    from cevit.api import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("cevit", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def run(args: argparse.Namespace) -> int:
    from cevit.errors import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    if args.workers < 1 or args.queue_size < 0:
        raise ConfigError(f"--workers must be >= 1 and --queue-size >= 0, got {args.workers} and {args.queue_size}")
    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if not (args.upload_idle_timeout > 0 and args.upload_timeout > 0 and args.header_timeout > 0):
        raise ConfigError("--header-timeout, --upload-idle-timeout and --upload-timeout must be > 0")
    if args.max_temp_mb is not None and args.max_temp_mb < args.max_upload_mb:
        raise ConfigError(f"--max-temp-mb must be at least --max-upload-mb, got {args.max_temp_mb}")
    try:
        import uvicorn

        from cevit.api import create_app
        from cevit.api.protocol import header_deadline_protocol
        from cevit.api.uploads import UploadTimeouts
    except ImportError as exc:
        raise ConfigError(f"cevit serve needs the 'api' extra: pip install 'cevit[api]' ({exc})") from exc
    from cevit.inference.pipeline import load_model

    configure_logging(args.log_level)
    log = logging.getLogger("cevit.api")
    # before binding: errors exit with code 3
    detector = load_model(weights=args.weights, device=args.device, **limit_options(args))
    app = create_app(
        detector=detector, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers,
        queue_size=args.queue_size, api_key=args.api_key, tmp_dir=args.tmp_dir,
        max_temp_bytes=None if args.max_temp_mb is None else int(args.max_temp_mb * 1024 * 1024),
        upload_timeouts=UploadTimeouts(idle=args.upload_idle_timeout, total=args.upload_timeout),
    )  # fmt: skip
    if args.host not in LOOPBACK and args.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the service",
                    args.host)  # fmt: skip
    log.info("serving on http://%s:%d/", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, workers=1,
                http=header_deadline_protocol(args.header_timeout))  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cevit.cli.serve``: the same as ``cevit serve`` (exit codes as in :mod:`cevit.cli.main`)."""
    from cevit.cli.main import _error_code
    from cevit.errors import CevitError

    parser = argparse.ArgumentParser(prog="cevit serve", description="Serve the cevit HTTP API and web page.")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="cevit: %(message)s", stream=sys.stderr)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except CevitError as exc:
        print(f"cevit: error: {exc}", file=sys.stderr)
        return _error_code(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
