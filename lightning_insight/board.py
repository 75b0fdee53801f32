"""``lightning-insight board --logdir DIR [--port N]``: TensorBoard with InsightBoard, on 127.0.0.1.

TensorBoard runs in this process with the flags InsightBoard needs: every report and every image of
every epoch kept (``--samples_per_plugin``), bound to the loopback interface only. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: The interface TensorBoard binds to: the logs stay on this machine.
HOST = "127.0.0.1"

#: ``--samples_per_plugin``: 0 keeps every sample of InsightBoard's reports and the monitors' images.
SAMPLES_PER_PLUGIN = "lightning_insight=0,images=0"


def tensorboard_argv(logdir: str, *, port: int, reload_interval: float) -> list[str]:
    """The TensorBoard command line that ``board`` runs (without the program name).

    Example:
        >>> tensorboard_argv("lightning_logs", port=6006, reload_interval=30)[:4]
        ['--logdir', 'lightning_logs', '--host', '127.0.0.1']
    """
    return [
        "--logdir",
        logdir,
        "--host",
        HOST,
        "--port",
        str(port),
        "--samples_per_plugin",
        SAMPLES_PER_PLUGIN,
        "--reload_interval",
        str(reload_interval),
        # The Python loader: what InsightBoard is tested against, and it honours samples_per_plugin.
        "--load_fast",
        "false",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-insight board",
        description="Start TensorBoard with the InsightBoard tab on http://127.0.0.1:PORT.",
    )
    parser.add_argument("--logdir", required=True, help="the log directory (e.g. lightning_logs)")
    parser.add_argument("--port", type=int, default=6006, help="the port (default 6006; 0: any)")
    parser.add_argument(
        "--reload_interval",
        type=float,
        default=30.0,
        help="seconds between reloads of the log directory (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run TensorBoard until interrupted; returns its exit status.

    Args:
        argv: The arguments after ``board`` (``None``: ``sys.argv[1:]``).

    Returns:
        TensorBoard's exit status (0 after a clean stop).
    """
    from tensorboard import default, program

    from lightning_insight.tensorboard_plugin import InsightBoardLoader

    args = _parser().parse_args(argv)
    plugins = default.get_plugins()
    if not any(plugin is InsightBoardLoader for plugin in plugins):  # not installed as a package
        plugins.append(InsightBoardLoader)
    board = program.TensorBoard(plugins=plugins)
    board.configure(
        argv=[
            "tensorboard",
            *tensorboard_argv(args.logdir, port=args.port, reload_interval=args.reload_interval),
        ]
    )
    log.info("Starting TensorBoard with InsightBoard over %s", args.logdir)
    status: int = board.main()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
