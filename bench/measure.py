#!/usr/bin/python3
"""Run one bench program and record how busy the rest of the machine was.

  measure.py OUT.json [--stderr FILE] -- COMMAND [ARGS...]

The command must print one JSON object on stdout; it is written to OUT.json with
a "_machine" member added:
  wall_s        wall time of the command
  own_cores     CPU time of the command / wall (how many cores it kept busy)
  others_cores  (machine busy time - the command's CPU time) / wall: cores used
                by OTHER processes meanwhile (0 on a quiet machine, up to nproc)
  steal_cores   time the hypervisor ran someone else on our vCPUs / wall
summarize.py uses others_cores + steal_cores to tell quiet runs from disturbed
ones on a shared machine. Standard library only.
"""
import json
import os
import resource
import subprocess
import sys
import time


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, v[7] if len(v) > 7 else 0


def main():
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") < 1:
        sys.exit(__doc__)
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    out = opts[0]
    err_path = opts[opts.index("--stderr") + 1] if "--stderr" in opts else None
    tck = os.sysconf("SC_CLK_TCK")

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, s0 = cpu_times()
    t0 = time.monotonic()
    with open(err_path, "w") if err_path else open(os.devnull, "w") as ferr:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=ferr)
    wall = time.monotonic() - t0
    b1, s1 = cpu_times()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.stderr.write(p.stdout.decode(errors="replace"))
        sys.exit(f"measure.py: {' '.join(cmd)} failed with status {p.returncode}")
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    busy = (b1 - b0) / tck
    d = json.loads(p.stdout)
    d["_machine"] = {
        "wall_s": round(wall, 3),
        "own_cores": round(own / wall, 3),
        "others_cores": round(max(0.0, busy - own) / wall, 3),
        "steal_cores": round((s1 - s0) / tck / wall, 3),
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
    }
    with open(out, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
