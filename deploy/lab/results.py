#!/usr/bin/env python3
"""The real-VM lab's results: the moments of the migration gathered from
what the run left in its work folder, a JSON summary, and the timeline
picture (nemo-timeline), all in a results folder that outlives the lab.

  results.py WORK RESULTS BIN   (the lab's settings in the environment)

Reads WORK/frames-a.pcapng and WORK/frames-b.pcapng (what the VM sent on
each hypervisor's tap, vm_capture), WORK/migration.json (qmp.py migrate),
WORK/destination-events.json
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


VM_MAC = "52:54:00:00:01:02"


def capture(path):
    """(unix time, source MAC, EtherType, ICMPv6 type) of each frame in a
    capture of the VM's port, read with tshark."""
    try:
        out = subprocess.run(
            ["tshark", "-r", path, "-T", "fields", "-E", "separator=,",
             "-e", "frame.time_epoch", "-e", "eth.src", "-e", "eth.type", "-e", "icmpv6.type"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split(",") + ["", "", ""]
        if parts[0]:
            rows.append((float(parts[0]), parts[1], parts[2], parts[3]))
    return rows


def delivered(path):
    """Times the host put a probe into the VM's port (frames to its MAC)."""
    return [t for t, source, _, _ in capture(path) if source != VM_MAC]


def frames(path):
    """(unix time, kind) of each frame the VM sent in a capture of its
    port: RARP (QEMU's announcement), ARP, NA (an unsolicited Neighbor
    Advertisement), NS, IPv6 (anything else, e.g. a probe's answer)."""
    seen = []
    for time, source, ether, icmp in capture(path):
        if source != VM_MAC:
            continue
        kind = {"0x8035": "RARP", "0x0806": "ARP"}.get(ether)
        if kind is None:
            kind = {"136": "NA", "135": "NS"}.get(icmp.split(";")[0], "IPv6")
        seen.append((time, kind))
    return seen


def probes(path):
    """(sent, answered or None) of each probe in nemo-probe's CSV."""
    rows = []
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                cells = line.strip().split(",")
                if len(cells) >= 3 and cells[1]:
                    rows.append((float(cells[1]), float(cells[2]) if cells[2] else None))
    except OSError:
        pass
    return rows


def main(work, results, bin_dir):
    settings = {
        "mode": os.environ.get("MODE", "vm"),
        "hook": os.environ.get("HOOK", "resume"),
        "wan_delay_ms": int(os.environ.get("WAN_DELAY_MS", "0")),
        "accelerator": os.environ.get("ACCEL_USED", ""),
        # Datacenter B's care-of address (its registration is the move's),
        # and its site.
        "b_care_of": os.environ.get("B_CARE_OF", "2001:db8:3::10"),
        "site_b": os.environ.get("SITE_B", "ipv6"),
    }
    migration = load(f"{work}/migration.json", {})
    destination = load(f"{work}/destination-events.json", [])
    marks = []

    def mark(label, unix):
        if unix:
            marks.append({"label": label, "unix": unix})
        return unix

    def between(a, b):
        return round((b - a) * 1000, 1) if a and b else None

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
                if " registered " in line and f"care_of={settings['b_care_of']}" in line:
                    # The first: later ones are refreshes (behind a NAT,
                    # every keepalive).
                    ba_received = log_time(line)
                    bu_sent = ba_received - float(field(line, "took_ms") or 0) / 1000
                    break
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

    # The network's share, measured at the VM (issue 29, item 1): from the
    # VM's first frame at the destination (it runs there and says so) to
    # the first probe answered after it; and the probes lost while the VM
    # ran on either side (arriving before it paused at the source, or after
    # it resumed at the destination), one-way delay estimated as half the
    # median round trip before the migration.
    at_a, at_b = frames(f"{work}/frames-a.pcapng"), frames(f"{work}/frames-b.pcapng")
    last_at_a = mark("VM's last frame at A", max((t for t, _ in at_a if not paused or t <= paused), default=None))
    first_b = min(at_b, default=None)
    first_at_b = mark(f"VM's first frame at B ({first_b[1]})" if first_b else "", first_b[0] if first_b else None)
    sent = probes(f"{work}/probes.csv")
    before = sorted(a - s for s, a in sent if a is not None and (not started or s < started))
    one_way = before[len(before) // 2] / 2 if before else 0.0

    def first_answer_after(moment):
        """Milliseconds from `moment` to the first probe answered after it."""
        answered = min((a for _, a in sent if a is not None and moment and a >= moment), default=None)
        return round((answered - moment) * 1000, 1) if answered and moment else None

    measured_share = first_answer_after(first_at_b)
    # The network's part alone: from the VM's first frame at B to the first
    # probe the host put into its port after it (the guest answers when it
    # runs: under TCG tens of milliseconds after RESUME).
    into_b = min((t for t in delivered(f"{work}/frames-b.pcapng") if first_at_b and t >= first_at_b), default=None)
    delivered_share = round((into_b - first_at_b) * 1000, 1) if into_b and first_at_b else None
    # QEMU announces the VM itself (RARP) as it resumes; the guest's own
    # first frame says when it runs its network stack: from there on, a
    # delay is the network's alone.
    guest_b = min(((t, k) for t, k in at_b if k != "RARP"), default=None)
    guest_at_b = mark(f"guest's first own frame at B ({guest_b[1]})" if guest_b else "", guest_b[0] if guest_b else None)
    guest_share = first_answer_after(guest_at_b)
    # FAILBACK=1: the destination ended and the source resumed; the way
    # back's outage is the longest silence in the answers after that; the
    # VM ran nowhere from its last frame at B to its first at A again
    # (the guest answers a probe every 2 ms: its frames say when it runs).
    failback = None
    failback_at = None
    try:
        with open(f"{work}/failback.at") as f:
            failback_at = float(f.read())
        with open(f"{work}/failback.resumed") as f:
            failback_resumed = float(f.read())
        mark("failback: B's QEMU quit", failback_at)
        mark("failback: A's VM continued", failback_resumed)
        answers = sorted(a for _, a in sent if a is not None)
        gaps = [(b - a, a, b) for a, b in zip(answers, answers[1:]) if b > failback_at]
        longest = max(gaps, default=None)
        again_at_a = min((t for t, _ in at_a if t > failback_at), default=None)
        mark("VM's frame at A again", again_at_a)
        # B's VM ran until its QEMU quit: its last frame there at all.
        last_at_b = max((t for t, _ in at_b), default=None)
        failback = {
            "outage_ms": round(longest[0] * 1000, 1) if longest else None,
            "vm_nowhere_ms": between(last_at_b, again_at_a),
            "continued_to_first_frame_at_a_ms": between(failback_resumed, again_at_a),
            "first_frame_at_a_to_first_answer_ms": None,
        }
        if longest and again_at_a:
            failback["first_frame_at_a_to_first_answer_ms"] = round((longest[2] - again_at_a) * 1000, 1)
    except (OSError, ValueError):
        pass
    lost_at_source = sum(1 for s, a in sent if a is None and paused and s + one_way < paused)
    lost_at_destination = sum(
        1
        for s, a in sent
        if a is None and resumed and s + one_way > resumed and (not failback_at or s + one_way < failback_at)
    )

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
        "outage_less_downtime_ms": share,
        "network_share_ms": measured_share,
        "first_frame_to_probe_into_port_ms": delivered_share,
        "vm_first_frame_at_destination": {
            "kind": first_b[1] if first_b else None,
            "after_resume_ms": between(resumed, first_at_b),
        },
        "guest_first_frame_at_destination": {
            "kind": guest_b[1] if guest_b else None,
            "after_resume_ms": between(resumed, guest_at_b),
            "to_first_answer_ms": guest_share,
        },
        "vm_last_frame_at_source_before_pause_ms": between(last_at_a, paused),
        "probes_lost_while_vm_ran": {
            "source": lost_at_source,
            "destination": lost_at_destination,
            "one_way_ms": round(one_way * 1000, 2),
        },
        "probes": {
            "interval_ms": 2,
            "sent": int(field(probe, "sent") or 0),
            "answered": int(field(probe, "received") or 0),
            "lost": int(field(probe, "lost") or 0),
            # Answered more than once: the VM got the probe at both sites
            # (the home agent's copies during a move) or twice at one.
            "duplicates": int(field(probe, "duplicates") or 0),
        },
        "tcp": {"survived": os.environ.get("TCP") == "survived", "receiver": iperf, "stall_ms": stall_ms},
        "moments_ms_from_migration_start": {m["label"]: between(started, m["unix"]) for m in marks},
        "failback": failback,
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
    for name in ("probes.csv", "migration.json", "destination-events.json", "probe.log", "frames-a.pcapng", "frames-b.pcapng", "mr-a.log", "mr-b.log", "controller.log", "ha.log"):
        if os.path.exists(f"{work}/{name}"):
            shutil.copy(f"{work}/{name}", results)
    title = (
        f"Live migration of a QEMU guest ({settings['accelerator']}), WAN delay "
        f"{settings['wan_delay_ms']} ms each way, nemo told on {settings['hook']}"
    )
    note = (
        f"tenant outage {outage:.1f} ms; QEMU: total {migration.get('total_time_ms')} ms, "
        f"downtime {downtime} ms; network's share {measured_share} ms (VM's first frame at B "
        f"to the first answer), lost while it ran {lost_at_source}+{lost_at_destination}; "
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
    kind = first_b[1] if first_b else "none seen"
    print(
        f"   network's share: {measured_share} ms from the VM's first frame at B ({kind}, "
        f"{between(resumed, first_at_b)} ms after RESUME) to the first answer; outage less QEMU's "
        f"downtime {share} ms (nemo told on {settings['hook']})"
    )
    print(f"                    {delivered_share} ms from it to the first probe put into the VM's port at B")
    guest_kind = guest_b[1] if guest_b else "none seen"
    print(
        f"                    {guest_share} ms from the guest's own first frame at B ({guest_kind}, "
        f"{between(resumed, guest_at_b)} ms after RESUME) to the first answer"
    )
    print(
        f"   lost while the VM ran: {lost_at_source} probes at the source (before its pause), "
        f"{lost_at_destination} at the destination (after RESUME)"
    )
    if failback:
        print(
            f"   failback:        outage {failback['outage_ms']} ms on the way back; the VM ran nowhere for "
            f"{failback['vm_nowhere_ms']} ms (its last frame at B to its first at A again); the first "
            f"answer {failback['first_frame_at_a_to_first_answer_ms']} ms after its first frame at A"
        )
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
