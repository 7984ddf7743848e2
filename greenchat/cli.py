"""Entry points of the programs: argv in, exit status out.

Errors a user can fix (bad credentials file, port in use, no server) are one
line on stderr and exit status 1; bad arguments are argparse's usage line and
exit status 2. Tracebacks are for bugs only.
"""

import logging
import signal
import sys

import gevent

from greenchat.config import parse_client_args, parse_server_args, setup_logging
from greenchat.errors import GreenchatError
from greenchat.server.runtime import tune_server_process

log = logging.getLogger("greenchat")


def build_server(config):
    """Load credentials, open the store and construct (not start) the server.

    Logs a warning for each careless default it sees: a loose or plain-text
    accounts file, no account, a TLS certificate about to expire.
    """
    from greenchat import certs
    from greenchat.credentials import Credentials, file_warnings
    from greenchat.server.server import ChatServer
    from greenchat.server.store import Store

    credentials = Credentials.load(config.credentials)
    warnings = file_warnings(config.credentials, credentials)
    if config.tls_cert:
        warnings += certs.expiry_warnings(config.tls_cert)
    for warning in warnings:
        log.warning("%s", warning)
    store = Store.open(config.database)
    try:
        return ChatServer(config, credentials, store)
    except BaseException:
        store.close()
        raise


def server_main(argv=None):
    config = parse_server_args(sys.argv[1:] if argv is None else argv)
    setup_logging(config.log_level)
    tune_server_process()
    try:
        server = build_server(config)
        try:
            server.start()
        except BaseException:
            server.store.close()
            raise
    except GreenchatError as exc:
        print(f"greenchat-server: {exc}", file=sys.stderr)
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, lambda: gevent.spawn(server.stop))
    # The accounts file is reloaded when it changes; SIGHUP asks at once.
    gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(server.reload_credentials))
    server.serve_forever()
    return 0


def client_main(argv=None):
    from greenchat.client.client import Client
    from greenchat.client.console import Console, VisibleFormatter

    config = parse_client_args(sys.argv[1:] if argv is None else argv)
    # Log lines quote peers and the server: escaped like everything shown.
    handler = logging.StreamHandler()
    handler.setFormatter(VisibleFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    try:
        client = Client(config, Console(0, sys.stdout, color=config.color))
    except GreenchatError as exc:
        print(f"greenchat-client: {exc}", file=sys.stderr)
        return 1
    # Ctrl-C becomes a KeyboardInterrupt in this (the main) greenlet, wherever
    # it waits; left to itself, the hub would print a traceback first.
    interrupt = gevent.signal_handler(signal.SIGINT, gevent.kill, gevent.getcurrent(),
                                      KeyboardInterrupt)
    try:
        return client.run()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    finally:
        interrupt.cancel()


def run_server():
    sys.exit(server_main())


def run_client():
    sys.exit(client_main())
