"""``python -m mongosim --port 0 --oplog-size N --repl-set NAME``.

Prints the connection URI as the first line of stdout, serves until SIGTERM or
SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from mongosim.sim import DEFAULT_OPLOG_SIZE, MongoSim


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m mongosim", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=27017, help="port to listen on; 0 picks a free one"
    )
    parser.add_argument(
        "--oplog-size",
        type=int,
        default=DEFAULT_OPLOG_SIZE,
        help="oplog entries kept for resuming change streams",
    )
    parser.add_argument("--repl-set", default="rs0", help="replica set name")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with MongoSim(port=args.port, oplog_size=args.oplog_size, repl_set=args.repl_set) as sim:
        print(sim.uri, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s mongosim %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
