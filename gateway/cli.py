"""``wechat-gateway``: commands -> config -> server."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.config import (
    DEFAULT_CONFIG_FILE,
    ENV_CONFIG,
    ConfigError,
    check_bind,
    default_config_path,
    load_settings,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.config import Settings

EXIT_CONFIG = 2
#: A command line that names nothing to do (argparse's own code for a usage error).
EXIT_USAGE = 2
#: The commented example config, at the top of the source tree (it is not installed).
EXAMPLE_CONFIG = "gateway.yaml.example"

_DESCRIPTION = """\
WeChat QR-code login in front of any web app.

wechat-gateway sits in front of an app that has no login: it sends every visitor without a
session through WeChat's QR login, then forwards their requests to the app with the user's
identity in X-WeChat-OpenID and related headers.
"""

_EPILOG = f"""\
The config file is YAML; start from gateway.yaml.example, at the top of the source tree.
Without -c, the file is ${ENV_CONFIG}, then ./{DEFAULT_CONFIG_FILE}. With no command, this
help is printed on stderr and the exit status is 2.

examples:
  wechat-gateway gen-secret                 a value for session.secret
  wechat-gateway check-config -c gw.yaml    validate, print every problem, exit 2 if any
  wechat-gateway serve -c gw.yaml           run in production (gunicorn, in-process)
  wechat-gateway sessions list --user OPENID
  wechat-gateway sessions revoke --user OPENID   sign a user out everywhere
  wechat-gateway demo                       try it locally, no WeChat account needed
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wechat-gateway",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # No command (or ``sessions`` with no action) prints that parser's whole help, not
    # argparse's one-line "required" error: ``usage`` names the parser to print.
    parser.set_defaults(usage=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (gunicorn, production settings)",
        description="Run the gateway on gunicorn, started in-process. An invalid config "
        "prints every problem and exits 2 without starting.",
    )
    _add_config_option(serve)
    serve.add_argument(
        "--bind", type=_bind, metavar="HOST:PORT", help="listen address (overrides server.bind)"
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="worker processes (overrides server.workers)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file and print every problem",
        description="Validate the config: exit 0 if it is usable, else print every problem, "
        "one per line naming its key path, and exit 2.",
    )
    _add_config_option(check)

    demo = commands.add_parser(
        "demo",
        help="run a complete local demo: WeChat simulator, sample app, gateway",
        description="Run the built-in WeChat simulator, a sample app that shows the identity "
        "it receives, and the gateway in front of it, all on 127.0.0.1. No WeChat account "
        "needed. Prints the URL to open.",
    )
    demo.add_argument("--port", type=_port, default=8000, help="the gateway's port (default: 8000)")

    sessions = commands.add_parser(
        "sessions",
        help="list or revoke active sessions (in the state store)",
        description="List the active sessions recorded in the state store, or end some: "
        "a revoked session is no session on every worker of every replica within a second.",
    )
    sessions.set_defaults(usage=sessions)
    actions = sessions.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="list active sessions")
    _add_config_option(listing)
    listing.add_argument("--user", metavar="ID", help="only this user's (openid or unionid)")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    revoke = actions.add_parser("revoke", help="end sessions; prints how many it ended")
    _add_config_option(revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", metavar="ID", help="every session of a user (openid or unionid)")
    which.add_argument("--sid", metavar="SID", help="one session, by its id")
    which.add_argument("--all", action="store_true", help="every session")
    commands.add_parser(
        "gen-secret",
        help="print a fresh random value for session.secret",
        description="Print a fresh random value (43 URL-safe characters) for session.secret.",
    )

    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"config file (default: ${ENV_CONFIG}, then ./{DEFAULT_CONFIG_FILE})",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def _bind(text: str) -> str:
    problem = check_bind(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _load(path: str | None) -> Settings | None:
    if path is None and not default_config_path().exists():
        print(_no_config_file(), file=sys.stderr)
        return None
    try:
        return load_settings(path)
    except ConfigError as error:
        # One problem per line, nothing else, so the report is easy to read and to grep.
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def _no_config_file() -> str:
    """Where the config was looked for, and how to start one: the report's one line."""
    file = default_config_path()
    if os.environ.get(ENV_CONFIG):
        return f"{file}: config file not found (named by ${ENV_CONFIG})"
    where = "" if Path(EXAMPLE_CONFIG).is_file() else ", at the top of the source tree"
    return (
        f"{file}: config file not found (no -c FILE, no ${ENV_CONFIG}); start from the "
        f"example{where}: cp {EXAMPLE_CONFIG} {DEFAULT_CONFIG_FILE}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None or (args.command == "sessions" and args.action is None):
        args.usage.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "gen-secret":
        print(secrets.token_urlsafe(32))
        return 0
    if args.command == "check-config":
        settings = _load(args.config)
        if settings is None:
            return EXIT_CONFIG
        print(f"OK: {len(settings.upstreams)} upstream(s), public_url {settings.public_url}")
        return 0
    if args.command == "serve":
        settings = _load(args.config)
        if settings is None:
            return EXIT_CONFIG
        if args.bind or args.workers:
            server = replace(
                settings.server,
                bind=args.bind or settings.server.bind,
                workers=args.workers or settings.server.workers,
            )
            settings = replace(settings, server=server)
        from gateway.server.serve import serve  # noqa: PLC0415 - gunicorn only when serving

        def reread() -> Settings:
            """The file again, validated, with the same command-line overrides (SIGHUP)."""
            fresh = load_settings(args.config)
            if args.bind or args.workers:
                fresh = replace(
                    fresh,
                    server=replace(
                        fresh.server,
                        bind=args.bind or fresh.server.bind,
                        workers=args.workers or fresh.server.workers,
                    ),
                )
            return fresh

        return serve(settings, reread)
    if args.command == "sessions":
        settings = _load(args.config)
        if settings is None:
            return EXIT_CONFIG
        from gateway.sessions import list_sessions, revoke_sessions  # noqa: PLC0415

        if args.action == "list":
            return list_sessions(settings, user=args.user, as_json=args.json)
        return revoke_sessions(settings, user=args.user, sid=args.sid, everyone=args.all)
    if args.command == "demo":
        from gateway.demo import run_demo  # noqa: PLC0415 - the simulator only when demoing

        return run_demo(args.port)
    raise AssertionError(args.command)
