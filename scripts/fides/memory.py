"""Memory of a set of processes and all their descendants, from /proc: the sum of each
process's peak resident set (VmHWM) and of its proportional set size (Pss: shared pages
divided among the processes sharing them, so Celery's forked workers are not counted twice)."""
import os


def _children():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except OSError:
                pass
    return kids


def tree(pids):
    kids, out, todo = _children(), [], list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def usage(pids):
    """{'processes', 'hwm_mib', 'pss_mib'} over pids and their descendants."""
    ps = tree(pids)
    return {"processes": len(ps),
            "hwm_mib": sum(_kib(f"/proc/{p}/status", "VmHWM") for p in ps) / 1024,
            "pss_mib": sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in ps) / 1024}
