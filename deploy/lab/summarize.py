#!/usr/bin/env python3
"""The VM lab's runs side by side (bench/vm-migrations.sh): one row per
hook and WAN delay, medians and worst cases from each run's summary.json.

  summarize.py RESULTS_DIR
"""
import glob
import json
import statistics
import sys

rows = {}
for path in sorted(glob.glob(sys.argv[1] + "/*/summary.json")):
    s = json.load(open(path))
    key = (s["wan_delay_ms"], s["hook"], s.get("site_b", "ipv6"))
    rows.setdefault(key, []).append(s)
def fmt(values):
    values = [v for v in values if v is not None]
    if not values: return "n/a"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"
print("| hook, WAN one way, site B | runs | outage (median / worst, ms) | QEMU downtime | RESUME to VM's first frame at B | guest's first own frame to first answer | VM's first frame at B to first probe into its port | RESUME to Binding Ack | lost while the VM ran: source / destination (median, worst) | answered twice (median, worst) | TCP stall |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows):
    r = rows[key]
    m = lambda f: [f(s) for s in r]
    resume_ba = []
    for s in r:
        mo = s["moments_ms_from_migration_start"]
        a, b = mo.get("VM resumed (destination RESUME)"), mo.get("Binding Ack received")
        resume_ba.append(b - a if a is not None and b is not None else None)
    src = m(lambda s: s["probes_lost_while_vm_ran"]["source"])
    dst = m(lambda s: s["probes_lost_while_vm_ran"]["destination"])
    twice = [d for d in m(lambda s: s["probes"].get("duplicates")) if d is not None]
    print(f"| {key[1]}, {key[0]} ms, {key[2]} | {len(r)} | {fmt(m(lambda s: s['outage_ms']))} | {fmt(m(lambda s: s['qemu']['downtime_ms']))} | "
          f"{fmt(m(lambda s: s['vm_first_frame_at_destination']['after_resume_ms']))} | {fmt(m(lambda s: s['guest_first_frame_at_destination']['to_first_answer_ms']))} | "
          f"{fmt(m(lambda s: s.get('first_frame_to_probe_into_port_ms')))} | "
          f"{fmt(resume_ba)} | {statistics.median(src)}, {max(src)} / {statistics.median(dst)}, {max(dst)} | "
          f"{f'{statistics.median(twice)}, {max(twice)}' if twice else 'n/a'} | {fmt(m(lambda s: s['tcp']['stall_ms']))} |")
