#!/usr/bin/env python3
"""The lab's orchestrator hand on QEMU's monitor (QMP: one JSON object a
line on a unix socket), standard library only.

  qmp.py migrate SOCKET URI OUT.json   # on the source: migrate, wait, report
  qmp.py record SOCKET OUT.json        # events with their times, until killed
  qmp.py ready SOCKET STATUS [SECONDS] # wait until query-status says STATUS
  qmp.py quit SOCKET
  qmp.py cont SOCKET                   # resume a paused VM (the source
                                       # after a completed migration too)

`migrate` sets the migration parameters the lab uses (max-bandwidth
2 GB/s, downtime-limit 300 ms), starts it, records every event (MIGRATION
status changes, STOP) with QEMU's own timestamp, polls query-migrate until
it completes or fails, and writes a JSON summary: status, total_time_ms,
downtime_ms, setup_time_ms, started_unix, events.
"""

import json
import signal
import socket
import sys
import time

MOST_LINE = 64 * 1024


class Monitor:
    def __init__(self, path, timeout=30.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        # A monitor busy with another client accepts the connection but
        # never greets: give up instead of waiting forever.
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        self.events = []
        greeting = self.next()
        if "QMP" not in greeting:
            raise RuntimeError(f"{path}: not a QEMU monitor: {greeting}")
        self.execute("qmp_capabilities")
        self.sock.settimeout(None)

    def next(self):
        line = self.file.readline(MOST_LINE)
        if not line:
            raise RuntimeError("the monitor closed the connection")
        message = json.loads(line)
        if "event" in message:
            stamp = message.get("timestamp", {})
            self.events.append(
                {
                    "event": message["event"],
                    "data": message.get("data", {}),
                    "unix": stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6,
                }
            )
        return message

    def execute(self, command, **arguments):
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self.next()
            if "error" in message:
                raise RuntimeError(f"QEMU refused {command}: {message['error']}")
            if "return" in message:
                return message["return"]


def migrate(path, uri, out):
    monitor = Monitor(path)
    monitor.execute("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    monitor.execute("migrate-set-parameters", **{"max-bandwidth": 2 * 1024**3, "downtime-limit": 300})
    started = time.time()
    monitor.execute("migrate", uri=uri)
    while True:
        info = monitor.execute("query-migrate")
        status = info.get("status")
        if status in ("completed", "failed", "cancelled"):
            # QEMU may say completed a moment before it has set the times.
            for _ in range(100):
                if status != "completed" or info.get("total-time"):
                    break
                time.sleep(0.01)
                info = monitor.execute("query-migrate")
            break
        if time.time() - started > 120:
            monitor.execute("migrate_cancel")
            status = "timed out"
            break
        time.sleep(0.01)
    summary = {
        "status": status,
        "total_time_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"),
        "setup_time_ms": info.get("setup-time"),
        "transferred_bytes": info.get("ram", {}).get("transferred"),
        "started_unix": started,
        "events": monitor.events,
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"   migration {status}: total {summary['total_time_ms']} ms, downtime {summary['downtime_ms']} ms")
    return 0 if status == "completed" else 1


def record(path, out):
    monitor = Monitor(path)

    def write(*_):
        with open(out, "w") as f:
            json.dump(monitor.events, f, indent=1)
        sys.exit(0)

    signal.signal(signal.SIGTERM, write)
    signal.signal(signal.SIGINT, write)
    while True:
        try:
            monitor.next()
        except RuntimeError:
            write()
        # Each event on disk as it comes: the lab reads them while it runs.
        with open(out, "w") as f:
            json.dump(monitor.events, f, indent=1)


def ready(path, wanted, seconds):
    monitor = Monitor(path, timeout=seconds)
    deadline = time.time() + seconds
    while time.time() < deadline:
        if monitor.execute("query-status").get("status") == wanted:
            return 0
        time.sleep(0.05)
    print(f"qmp.py: {path} never reached {wanted}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) >= 4 and argv[0] == "migrate":
        return migrate(argv[1], argv[2], argv[3])
    if len(argv) == 3 and argv[0] == "record":
        return record(argv[1], argv[2])
    if len(argv) in (3, 4) and argv[0] == "ready":
        return ready(argv[1], argv[2], float(argv[3]) if len(argv) == 4 else 30.0)
    if len(argv) == 2 and argv[0] == "quit":
        Monitor(argv[1]).execute("quit")
        return 0
    if len(argv) == 2 and argv[0] == "cont":
        Monitor(argv[1]).execute("cont")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
