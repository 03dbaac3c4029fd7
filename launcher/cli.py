"""`launcher`: render, submit, status, logs, kill and list tvq runs (Kubernetes JobSets or local).

Imports stay light (no JAX, no kubernetes client until a command needs it) so --help is instant.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any

from launcher import errors
from launcher.errors import LauncherError, PreflightError
from launcher.values import ValuesError

BACKENDS = ("kubernetes", "local")
BACKEND_ENV = "TVQ_LAUNCHER_BACKEND"
_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def duration_s(text: str) -> int:
    """Seconds from 90, 90s, 5m, 2h or 1d."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a duration such as 90s, 5m, 2h")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=BACKENDS,
                         default=os.environ.get(BACKEND_ENV) or "kubernetes",
                         help=f"where runs live (default: ${BACKEND_ENV} or kubernetes)")
    backend.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                         "~/.kube/config)")
    backend.add_argument("--context", help="kubeconfig context (default: the current one)")
    backend.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    values = argparse.ArgumentParser(add_help=False)
    values.add_argument("-f", "--values", action="append", default=[], metavar="FILE",
                        help="run values YAML (the chart's values keys); repeatable")
    values.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, dotted keys (tpu.topology=4x4); repeatable")
    values.add_argument("--name", help="run (JobSet) name (default: nameOverride)")

    parser = argparse.ArgumentParser(
        prog="launcher", description="Run tvq on Kubernetes as a JobSet, or locally. "
        "Extra tvq flags go after `--` (render, submit).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("render", parents=[values], help="print the run's manifests")
    submit = commands.add_parser("submit", parents=[values, backend], help="start a run")
    submit.add_argument("--replace", action="store_true",
                        help="replace a live run of the same name")
    submit.add_argument("--follow", action="store_true",
                        help="stream logs until the run ends; exit 0 succeeded, "
                        f"{errors.EXIT_RUN_FAILED} failed, {errors.EXIT_TIMED_OUT} timed out")
    submit.add_argument("--timeout", type=duration_s, metavar="DURATION",
                        help="with --follow: stop waiting after this long (the run goes on)")
    for name, text in (("status", "show a run"), ("kill", "delete a run"),
                       ("logs", "print a run's logs")):
        command = commands.add_parser(name, parents=[backend], help=text)
        command.add_argument("name", metavar="NAME")
    commands.choices["kill"].add_argument("-y", "--yes", action="store_true",
                                          help="do not ask")
    logs = commands.choices["logs"]
    logs.add_argument("--worker", type=int, metavar="N", help="only worker N")
    logs.add_argument("--follow", "-F", action="store_true",
                      help="keep streaming, across restarts, until the run ends")
    logs.add_argument("--since", type=duration_s, metavar="DURATION",
                      help="only lines newer than this (kubernetes)")
    commands.add_parser("list", parents=[backend], help="list runs")
    return parser


def _backend(args: argparse.Namespace) -> Any:
    if args.backend == "local":
        from launcher.local import LocalBackend
        return LocalBackend()
    from launcher.kube import KubeBackend
    return KubeBackend(args.kubeconfig, args.context, args.namespace)


def _run_values(args: argparse.Namespace, extra: list[str]) -> tuple[dict[str, Any], str]:
    from launcher import values
    run = values.build(args.values, args.set, extra)
    return run, values.run_name(run, args.name)


def _submit(args: argparse.Namespace, extra: list[str]) -> int:
    from launcher.render import render
    from launcher.status import format_status
    run, name = _run_values(args, extra)
    backend = _backend(args)
    backend.submit(run, name, render(run, name), args.replace)
    print(f"submitted run {name} ({args.backend})", file=sys.stderr)
    if not args.follow:
        backend_flag = " --backend local" if args.backend == "local" else ""
        print(f"follow it with: launcher logs {name}{backend_flag} --follow", file=sys.stderr)
        return errors.EXIT_SUCCEEDED
    deadline = time.time() + args.timeout if args.timeout else None
    backend.logs(name, sys.stdout, follow=True, deadline=deadline)
    status = backend.status(name)
    print(format_status(status), file=sys.stderr)
    if not status.finished:
        print(f"launcher: run {name} still {status.state} after --timeout; it goes on "
              f"(`launcher kill {name}` stops it)", file=sys.stderr)
        return errors.EXIT_TIMED_OUT
    return errors.EXIT_SUCCEEDED if status.state == "Succeeded" else errors.EXIT_RUN_FAILED


def _kill(args: argparse.Namespace) -> int:
    backend = _backend(args)
    if not args.yes:
        where = "locally" if args.backend == "local" else f"in namespace {backend.namespace}"
        sys.stderr.write(f"delete run {args.name} {where}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("launcher: not killed", file=sys.stderr)
            return errors.EXIT_ERROR
    backend.kill(args.name)
    print(f"killed run {args.name}", file=sys.stderr)
    return errors.EXIT_SUCCEEDED


def _dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "render":
        from launcher.render import render, to_yaml
        run, name = _run_values(args, extra)
        sys.stdout.write(to_yaml(render(run, name)))
        return errors.EXIT_SUCCEEDED
    if args.command == "submit":
        return _submit(args, extra)
    if args.command == "kill":
        return _kill(args)
    from launcher.status import format_list, format_status
    backend = _backend(args)
    if args.command == "status":
        print(format_status(backend.status(args.name)))
    elif args.command == "logs":
        backend.logs(args.name, sys.stdout, worker=args.worker, follow=args.follow,
                     since_s=args.since)
    else:
        print(format_list(backend.list_runs()))
    return errors.EXIT_SUCCEEDED


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `launcher` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    if extra and args.command not in ("render", "submit"):
        print(f"launcher: {args.command}: extra tvq flags after `--` are for render and "
              "submit only", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    try:
        return _dispatch(args, extra)
    except (ValuesError, PreflightError) as error:
        print(f"launcher: {error}", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    except LauncherError as error:
        print(f"launcher: {error}", file=sys.stderr)
        return errors.EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
