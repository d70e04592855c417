#!/usr/bin/env python3
"""The real-VM lab's results: the moments of the migration gathered from
what the run left in its work folder, a JSON summary, and the timeline
picture (nemo-timeline), all in a results folder that outlives the lab.

  results.py WORK RESULTS BIN   (the lab's settings in the environment)

Reads WORK/migration.json (qmp.py migrate), WORK/destination-events.json
(qmp.py record), WORK/hook.out (nemoctl --output json place), WORK/mr-b.log
(nemo-mr's "registered" line at the new care-of address), WORK/probe.log
and WORK/probes.csv (nemo-probe), WORK/iperf.log and the bindings before
and after (WORK/binding-before.json, WORK/binding-after.json, from the
home agent's admin API). Prints the summary lines the lab shows.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def log_time(line):
    """The Unix time at the start of a tracing text log line."""
    stamp = line.split()[0].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float("0." + (fraction or "0"))


def field(text, name):
    match = re.search(r"\b" + name + r"=([^ ]+)", text)
    return match.group(1) if match else None


def main(work, results, bin_dir):
    settings = {
        "mode": os.environ.get("MODE", "vm"),
        "hook": os.environ.get("HOOK", "resume"),
        "wan_delay_ms": int(os.environ.get("WAN_DELAY_MS", "0")),
        "accelerator": os.environ.get("ACCEL_USED", ""),
    }
    migration = load(f"{work}/migration.json", {})
    destination = load(f"{work}/destination-events.json", [])
    marks = []

    def mark(label, unix):
        if unix:
            marks.append({"label": label, "unix": unix})
        return unix

    started = mark("migration started", migration.get("started_unix"))
    paused = mark(
        "VM paused (source STOP)",
        next((e["unix"] for e in migration.get("events", []) if e["event"] == "STOP"), None),
    )
    resumed = mark(
        "VM resumed (destination RESUME)",
        next((e["unix"] for e in destination if e["event"] == "RESUME"), None),
    )
    placed = None
    # nemoctl's JSON answer is an array of records, here one placement.
    hook = (load(f"{work}/hook.out") or [None])[0]
    if isinstance(hook, dict) and hook.get("since_unix_ms"):
        placed = mark(f"nemo told (hook: {settings['hook']})", hook["since_unix_ms"] / 1000)
    bu_sent = ba_received = None
    try:
        with open(f"{work}/mr-b.log") as f:
            for line in f:
                if " registered " in line and "care_of=2001:db8:3::10" in line:
                    ba_received = log_time(line)
                    bu_sent = ba_received - float(field(line, "took_ms") or 0) / 1000
    except OSError:
        pass
    mark("Binding Update sent", bu_sent)
    mark("Binding Ack received", ba_received)
    with open(f"{work}/probe.log") as f:
        probe = f.read()
    gap_from, gap_until = float(field(probe, "gap_from") or 0), float(field(probe, "gap_until") or 0)
    first_reply = mark("first reply", gap_until or None)
    outage = float(field(probe, "longest_gap_ms") or "nan")
    downtime = migration.get("downtime_ms")
    share = round(outage - downtime, 1) if downtime is not None else None

    def between(a, b):
        return round((b - a) * 1000, 1) if a and b else None

    iperf, stall_ms = "", None
    try:
        with open(f"{work}/iperf.log") as f:
            lines = f.read().splitlines()
        iperf = " ".join(" ".join(l.split()[6:8]) for l in lines if "receiver" in l)
        # The longest run of 100 ms reports in which nothing arrived (the
        # guest sends, -R): the TCP stream's stall, to 100 ms.
        run_start, longest = None, 0.0
        for line in lines:
            report = re.match(r"\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+([\d.]+)\s+\w*Bytes", line)
            if not report or "sender" in line or "receiver" in line:
                continue
            begin, end, moved = (float(g) for g in report.groups())
            if moved == 0:
                run_start = begin if run_start is None else run_start
                longest = max(longest, end - run_start)
            else:
                run_start = None
        stall_ms = round(longest * 1000)
    except OSError:
        pass
    summary = {
        **settings,
        "qemu": {
            "status": migration.get("status"),
            "total_time_ms": migration.get("total_time_ms"),
            "downtime_ms": downtime,
            "setup_time_ms": migration.get("setup_time_ms"),
            "transferred_bytes": migration.get("transferred_bytes"),
        },
        "outage_ms": outage,
        "network_share_ms": share,
        "probes": {
            "interval_ms": 2,
            "sent": int(field(probe, "sent") or 0),
            "answered": int(field(probe, "received") or 0),
            "lost": int(field(probe, "lost") or 0),
        },
        "tcp": {"survived": os.environ.get("TCP") == "survived", "receiver": iperf, "stall_ms": stall_ms},
        "moments_ms_from_migration_start": {m["label"]: between(started, m["unix"]) for m in marks},
        "paused_to_resumed_ms": between(paused, resumed),
        "resumed_to_first_reply_ms": between(resumed, first_reply),
        "placed_to_binding_ack_ms": between(placed, ba_received),
        "binding_before": load(f"{work}/binding-before.json"),
        "binding_after": load(f"{work}/binding-after.json"),
    }
    os.makedirs(results, exist_ok=True)
    with open(f"{results}/summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(f"{results}/marks.json", "w") as f:
        json.dump({"marks": marks, "gap": [gap_from, gap_until] if gap_until else None}, f, indent=1)
    for name in ("probes.csv", "migration.json", "destination-events.json", "probe.log"):
        if os.path.exists(f"{work}/{name}"):
            shutil.copy(f"{work}/{name}", results)
    title = (
        f"Live migration of a QEMU guest ({settings['accelerator']}), WAN delay "
        f"{settings['wan_delay_ms']} ms each way, nemo told on {settings['hook']}"
    )
    note = (
        f"tenant outage {outage:.1f} ms; QEMU: total {migration.get('total_time_ms')} ms, "
        f"downtime {downtime} ms; network's share {share} ms; "
        f"resumed to first reply {summary['resumed_to_first_reply_ms']} ms"
    )
    subprocess.run(
        [
            f"{bin_dir}/nemo-timeline",
            "--probes", f"{results}/probes.csv",
            "--marks", f"{results}/marks.json",
            "--title", title,
            "--note", note,
            "--out", f"{results}/timeline.svg",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"   QEMU:            total {migration.get('total_time_ms')} ms, downtime {downtime} ms ({settings['accelerator']})")
    print(f"   network's share: {share} ms (outage less QEMU's downtime; nemo told on {settings['hook']})")
    print(f"   TCP stall:       {stall_ms} ms (longest run of 100 ms reports with nothing received)")
    print(
        f"   moments:         paused to resumed {summary['paused_to_resumed_ms']} ms, resumed to first reply "
        f"{summary['resumed_to_first_reply_ms']} ms, placed to Binding Ack {summary['placed_to_binding_ack_ms']} ms"
    )
    print(f"   results:         {results} (summary.json, timeline.svg, probes.csv)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
