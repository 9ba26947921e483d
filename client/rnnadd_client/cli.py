"""The `rnnadd` command: one subcommand per client method, the server's JSON answer on stdout.

Exit status: 0 on success, 1 when the server refused or could not be reached (a one-line
`error: ...` on stderr, with the problem's status, title, detail and field), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rnnadd_client.client import DEFAULT_URL, Client
from rnnadd_client.errors import ClientError

# Named retrain flags: (flag, type, help). The server checks the values; the client only parses.
RETRAIN_FLAGS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("--hidden-size", int, "hidden units of the new network"),
    ("--optimizer", str, "optimizer name, e.g. adam or sgd"),
    ("--learning-rate", float, "step size of the optimizer"),
    ("--batch-size", int, "pairs per training step"),
    ("--max-steps", int, "training steps at most"),
    ("--seed", int, "random seed, for a reproducible run"),
    ("--bits", int, "width of the training pairs"),
)


def _uint(text: str) -> str:
    """Non-negative decimal integer of any size, kept as a string so nothing is lost."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return text


def _pair(text: str) -> list[str]:
    """Parse "A,B" for the batch command."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected A,B with non-negative integers, got {text!r}")
    return parts


def _param(text: str) -> tuple[str, Any]:
    """Parse KEY=VALUE; VALUE is read as JSON (3, 0.5, true) or else kept as text (adam)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip().replace("-", "_"), value


def _common(parser: argparse.ArgumentParser) -> None:
    """Connection options, accepted before or after the subcommand."""
    parser.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"service base URL (default: $RNNADD_URL or {DEFAULT_URL})")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="admin token for retrain, activate and cancel "
                             "(default: $RNNADD_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for each HTTP answer (default: 10)")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and flag has help text, so `rnnadd CMD --help` is the reference."""
    parser = argparse.ArgumentParser(
        prog="rnnadd",
        description="Call an rnnadd service: predictions, the model, retrain jobs and rollback.",
        epilog="Big numbers are fine: they are sent as strings of digits. "
               "Run `rnnadd COMMAND --help` for a command's options.",
    )
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        """A subcommand whose help shows in `rnnadd --help` and as its own description."""
        command = sub.add_parser(name, help=text, description=text)
        _common(command)
        return command

    p = add("predict", "the model's sum of one pair A + B")
    p.add_argument("a", type=_uint, help="first addend, a non-negative integer")
    p.add_argument("b", type=_uint, help="second addend, a non-negative integer")
    p.add_argument("--bits", type=int, help="width to add at (default: the narrowest that fits)")
    p.add_argument("--trace", action="store_true",
                   help="also show each step: output probability, predicted bit, hidden state")
    p = add("batch", "the model's sums of several pairs in one request")
    p.add_argument("pairs", type=_pair, nargs="+", metavar="A,B", help="a pair, e.g. 3,5")
    p.add_argument("--bits", type=int, help="width to add every pair at")
    add("model", "record of the active model: version, metrics, gate, training history")
    add("models", "every stored version, the active one marked")
    add("health", "liveness (/healthz)")
    add("ready", "readiness (/readyz): fails while no model is loaded")
    p = add("jobs", "recent retrain jobs, newest first")
    p.add_argument("--limit", type=int, help="at most this many jobs")
    p = add("job", "one retrain job's record")
    p.add_argument("job_id", help="the job id that retrain printed")
    p = add("cancel", "stop a queued or running retrain job (admin)")
    p.add_argument("job_id", help="the job id that retrain printed")
    p = add("activate", "make a stored version the active model, e.g. to roll back (admin)")
    p.add_argument("version", help="a version id from `rnnadd models`")
    p.add_argument("--force", action="store_true",
                   help="activate even though the version failed the promotion gate")

    p = add("retrain", "start a retrain job (admin); the server checks every parameter")
    p.add_argument("--wait", action="store_true",
                   help="poll until the job ends; exit 1 unless it succeeded")
    p.add_argument("--wait-timeout", type=float, default=600.0,
                   help="with --wait, give up after this many seconds (default: 600)")
    p.add_argument("--poll-interval", type=float, default=0.5,
                   help="with --wait, seconds between polls (default: 0.5)")
    for flag, kind, text in RETRAIN_FLAGS:
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--activate", action=argparse.BooleanOptionalAction, default=None,
                   help="promote the new version if it passes the gate (server default: yes)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="any other training parameter, passed through as is (repeatable)")
    return parser


def retrain_params(args: argparse.Namespace) -> dict[str, Any]:
    """The named flags that were given, then --param pairs (which win)."""
    names = [flag[2:].replace("-", "_") for flag, _, _ in RETRAIN_FLAGS] + ["activate"]
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    params.update(dict(args.param))
    return params


def run(client: Client, args: argparse.Namespace) -> tuple[Any, int]:
    """Dispatch one subcommand; the result to print and the exit status."""
    simple = {"model": client.model, "models": client.models,
              "health": client.health, "ready": client.ready}
    if args.command in simple:
        return simple[args.command](), 0
    if args.command == "predict":
        return client.predict(args.a, args.b, bits=args.bits, trace=args.trace), 0
    if args.command == "batch":
        return client.predict_batch(args.pairs, bits=args.bits), 0
    if args.command == "jobs":
        return client.jobs(limit=args.limit), 0
    if args.command == "job":
        return client.job(args.job_id), 0
    if args.command == "cancel":
        return client.cancel(args.job_id), 0
    if args.command == "activate":
        return client.activate(args.version, force=args.force), 0
    result = client.retrain(wait=args.wait, timeout=args.wait_timeout,
                            poll_interval=args.poll_interval, **retrain_params(args))
    return result, 1 if args.wait and result.get("status") != "succeeded" else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON answer; exit 1 with a one-line message when the call fails."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader left early (`rnnadd models | head`): stop quietly, and keep Python's exit
        # flush from raising again on the dead pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    """Parse, call, print."""
    args = build_parser().parse_args(argv)
    url = getattr(args, "url", None) or os.environ.get("RNNADD_URL") or DEFAULT_URL
    token = getattr(args, "token", None) or os.environ.get("RNNADD_ADMIN_TOKEN") or None
    with Client(url, token=token, timeout=getattr(args, "timeout", 10.0)) as client:
        try:
            result, status = run(client, args)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2), flush=True)
    if status:
        print(f"error: job {result.get('id')} ended {result.get('status')}"
              + (f": {result['error']}" if result.get("error") else ""), file=sys.stderr)
    return status
