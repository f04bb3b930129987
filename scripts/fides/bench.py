"""Times Fides and lethe on the same database, interleaved person by person.

Each engine gets people of its own (gen-<i>@example.com of the scaled sample shop), so
that no erasure meets a person the other engine already erased. Both are timed the same
way: from just before the submitting POST until a status poll (every POLL seconds) sees
the request finished.

  Fides: POST /api/v1/privacy-request (policy default_access_policy or
         default_erasure_policy; no identity verification, no approval), then
         GET /api/v1/privacy-request?request_id=... until `complete`.
  lethe: POST /opendsr/v1/requests (a request the caller has verified, with a DPO token;
         no e-mailed code, no approval), then GET /opendsr/v1/requests/{id} until
         `completed`.

usage: bench.py --fides URL --lethe URL --lethe-token TOKEN --first N --n N --burst K --out FILE
Prints a line per request and writes every measurement as JSON to --out.
"""
import argparse
import datetime
import json
import statistics
import sys
import time
import uuid

import requests

import memory
import whatchanged

POLL = 0.01  # seconds between two status polls of one request
TIMEOUT = 300  # seconds a request may take before the run gives up

FIDES_RUNNING = {"pending", "approved", "in_processing"}
LETHE_RUNNING = {"received", "verified", "in_progress"}
LETHE_DONE = {"completed", "partially_completed"}


def email(i):
    return f"gen-{i}@example.com"


class Fides:
    name = "Fides"

    def __init__(self, url):
        self.base = url.rstrip("/") + "/api/v1"
        r = requests.post(f"{self.base}/oauth/token", timeout=30, data={
            "grant_type": "client_credentials",
            "client_id": "fidesadmin", "client_secret": "fidesadminsecret"})
        r.raise_for_status()
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    @staticmethod
    def policy(kind):
        return {"access": "default_access_policy", "erasure": "default_erasure_policy"}[kind]

    def submit_many(self, kind, people):
        """One POST, as Fides' API takes a list; returns the request ids."""
        r = self.s.post(f"{self.base}/privacy-request", timeout=60, json=[
            {"identity": {"email": email(i)}, "policy_key": self.policy(kind)} for i in people])
        body = r.json()
        if r.status_code >= 300 or body.get("failed"):
            sys.exit(f"Fides refused the submission: {r.status_code} {json.dumps(body)[:1500]}")
        return [x["id"] for x in body["succeeded"]]

    def submit(self, kind, person):
        return self.submit_many(kind, [person])[0]

    def status(self, rid):
        r = self.s.get(f"{self.base}/privacy-request", params={"request_id": rid}, timeout=60)
        r.raise_for_status()
        return r.json()["items"][0]["status"]

    def statuses(self, rids):
        """The statuses of recent requests, in one call (the newest 100)."""
        r = self.s.get(f"{self.base}/privacy-request", params={"size": 100}, timeout=60)
        r.raise_for_status()
        seen = {x["id"]: x["status"] for x in r.json()["items"]}
        return {rid: seen.get(rid, "pending") for rid in rids}

    @staticmethod
    def running(status):
        return status in FIDES_RUNNING

    @staticmethod
    def ok(status):
        return status == "complete"

    def why(self, rid):
        r = self.s.get(f"{self.base}/privacy-request/{rid}/log", timeout=60)
        return r.text[:2000]


class Lethe:
    name = "lethe"

    def __init__(self, url, token):
        self.base = url.rstrip("/") + "/opendsr/v1"
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"

    def submit(self, kind, person):
        rid = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        r = self.s.post(f"{self.base}/requests", timeout=60, json={
            "regulation": "gdpr", "subject_request_id": rid, "subject_request_type": kind,
            "subject_identities": [{"identity_type": "email", "identity_value": email(person),
                                    "identity_format": "raw"}],
            "submitted_time": now, "api_version": "0.1"})
        if r.status_code != 201:
            sys.exit(f"lethe refused the submission: {r.status_code} {r.text[:1500]}")
        return rid

    def submit_many(self, kind, people):
        return [self.submit(kind, p) for p in people]

    def status(self, rid):
        r = self.s.get(f"{self.base}/requests/{rid}", timeout=60)
        if r.status_code == 429:
            sys.exit("lethe answered 429 to a status poll: rate_limit must be 0 for this benchmark")
        r.raise_for_status()
        return r.json()["lethe_status"]

    def statuses(self, rids):
        return {rid: self.status(rid) for rid in rids}

    @staticmethod
    def running(status):
        return status in LETHE_RUNNING

    @staticmethod
    def ok(status):
        return status in LETHE_DONE

    def why(self, rid):
        return "see serve.log in the work directory (RUST_LOG=lethe=debug for each phase)"


def timed(engine, kind, person):
    """Seconds from the POST until the request is seen finished."""
    t0 = time.perf_counter()
    rid = engine.submit(kind, person)
    while True:
        st = engine.status(rid)
        if not engine.running(st):
            break
        if time.perf_counter() - t0 > TIMEOUT:
            sys.exit(f"{engine.name} {kind} for {email(person)} still {st} after {TIMEOUT} s")
        time.sleep(POLL)
    dt = time.perf_counter() - t0
    if not engine.ok(st):
        sys.exit(f"{engine.name} {kind} for {email(person)} ended as {st}: {engine.why(rid)}")
    return dt


def burst(engine, kind, people):
    """Submits every request at once; seconds until the last one finished."""
    t0 = time.perf_counter()
    rids = engine.submit_many(kind, people)
    submitted = time.perf_counter() - t0
    pending = set(rids)
    while pending:
        for rid, st in engine.statuses(sorted(pending)).items():
            if not engine.running(st):
                if not engine.ok(st):
                    sys.exit(f"{engine.name} burst: a request ended as {st}: {engine.why(rid)}")
                pending.discard(rid)
        if time.perf_counter() - t0 > TIMEOUT:
            sys.exit(f"{engine.name} burst: {len(pending)} requests unfinished after {TIMEOUT} s")
        if pending:
            time.sleep(0.1)
    return time.perf_counter() - t0, submitted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fides", required=True)
    ap.add_argument("--lethe", required=True)
    ap.add_argument("--lethe-token", required=True)
    ap.add_argument("--first", type=int, required=True, help="first gen-<i> person to use")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--db", required=True, help="the benchmark database, for what erasures changed")
    ap.add_argument("--fides-pids", required=True, help="Fides' server and worker, comma-separated")
    ap.add_argument("--lethe-pid", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    fides, lethe = Fides(a.fides), Lethe(a.lethe, a.lethe_token)
    pids = {"Fides": [int(p) for p in a.fides_pids.split(",")], "lethe": [a.lethe_pid]}
    engines = [fides, lethe]
    nxt = a.first

    def people(k):
        nonlocal nxt
        out = list(range(nxt, nxt + k))
        nxt += k
        return out

    res = {"access": {"Fides": [], "lethe": []}, "erasure": {"Fides": [], "lethe": []},
           "erased": {"Fides": [], "lethe": []}, "burst": {}}

    # One untimed access each first: connection pools, caches, lazy imports.
    for e, p in zip(engines, people(2)):
        print(f"warm-up  {e.name:5} access  {email(p):24} {timed(e, 'access', p):7.3f} s", flush=True)

    # The people of the erasure rounds (after the access rounds), read before any erasure.
    erasure_people = list(range(nxt + 2 * a.n, nxt + 4 * a.n))
    before = whatchanged.snapshot(a.db, [email(p) for p in erasure_people])

    for kind in ("access", "erasure"):
        for r in range(a.n):
            pair = people(2)
            # Who goes first alternates from one round to the next.
            order = engines if r % 2 == 0 else engines[::-1]
            for e, p in zip(order, pair if r % 2 == 0 else pair[::-1]):
                dt = timed(e, kind, p)
                res[kind][e.name].append(dt)
                if kind == "erasure":
                    res["erased"][e.name].append(p)
                print(f"round {r + 1:2} {e.name:5} {kind:7} {email(p):24} {dt:7.3f} s", flush=True)
        if kind == "access":
            res["memory_after_access"] = {name: memory.usage(ps) for name, ps in pids.items()}

    report, delta = whatchanged.changes(
        a.db, before, {name: [email(p) for p in ps] for name, ps in res["erased"].items()})
    res["what_changed"] = {"by_engine": report, "row_count_changes": delta}
    for name in ("Fides", "lethe"):
        print(f"{name} erasure, per its {a.n} people: {whatchanged.describe(name, report[name])}")
    print("row counts of every table:", delta or "unchanged")

    for e in engines:
        ps = people(a.burst)
        makespan, submitted = burst(e, "access", ps)
        res["burst"][e.name] = {"requests": a.burst, "makespan": makespan, "submit": submitted}
        print(f"burst    {e.name:5} {a.burst} access requests: submitted in {submitted:.2f} s, "
              f"all completed after {makespan:.2f} s = {a.burst / makespan:.2f} requests/s", flush=True)

    res["next"] = nxt
    res["memory"] = {name: memory.usage(ps) for name, ps in pids.items()}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    table(res, a.n)


def ratio(v):
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def table(res, n):
    med = {k: {e: statistics.median(v) for e, v in res[k].items()} for k in ("access", "erasure")}
    rng = {k: {e: (min(v), max(v)) for e, v in res[k].items()} for k in ("access", "erasure")}
    rate = {e: b["requests"] / b["makespan"] for e, b in res["burst"].items()}
    mem, mem1 = res["memory"], res["memory_after_access"]
    rows = [
        (f"access, submit -> completed (median of {n})",
         f"{med['access']['Fides']:.3f} s", f"{med['access']['lethe']:.3f} s",
         f"Fides / lethe = {ratio(med['access']['Fides'] / med['access']['lethe'])}"),
        ("  range (min-max)", "%.3f-%.3f" % rng["access"]["Fides"], "%.3f-%.3f" % rng["access"]["lethe"], ""),
        (f"erasure, submit -> completed (median of {n})",
         f"{med['erasure']['Fides']:.3f} s", f"{med['erasure']['lethe']:.3f} s",
         f"Fides / lethe = {ratio(med['erasure']['Fides'] / med['erasure']['lethe'])}"),
        ("  range (min-max)", "%.3f-%.3f" % rng["erasure"]["Fides"], "%.3f-%.3f" % rng["erasure"]["lethe"], ""),
        (f"burst of {res['burst']['Fides']['requests']} access requests",
         f"{rate['Fides']:.2f} req/s", f"{rate['lethe']:.2f} req/s",
         f"lethe / Fides = {ratio(rate['lethe'] / rate['Fides'])}"),
        ("  makespan", f"{res['burst']['Fides']['makespan']:.2f} s", f"{res['burst']['lethe']['makespan']:.2f} s",
         "lethe's makespan / its one access = "
         f"{res['burst']['lethe']['makespan'] / med['access']['lethe']:.1f}x (aim <= 10x)"),
        ("memory after the access rounds, peak RSS", f"{mem1['Fides']['hwm_mib']:.0f} MiB",
         f"{mem1['lethe']['hwm_mib']:.0f} MiB", f"Fides / lethe = {ratio(mem1['Fides']['hwm_mib'] / mem1['lethe']['hwm_mib'])}"),
        ("memory at the end, peak RSS (sum of VmHWM)", f"{mem['Fides']['hwm_mib']:.0f} MiB",
         f"{mem['lethe']['hwm_mib']:.0f} MiB", f"Fides / lethe = {ratio(mem['Fides']['hwm_mib'] / mem['lethe']['hwm_mib'])}"),
        ("memory at the end, PSS", f"{mem['Fides']['pss_mib']:.0f} MiB", f"{mem['lethe']['pss_mib']:.0f} MiB",
         f"Fides / lethe = {ratio(mem['Fides']['pss_mib'] / mem['lethe']['pss_mib'])}"),
        ("  processes", str(mem["Fides"]["processes"]), str(mem["lethe"]["processes"]), ""),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("", "Fides 2.78.2", "lethe", "ratio")
    w = [max(w[i], len(head[i])) for i in range(4)]
    line = lambda r: f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]}"
    print()
    print(line(head))
    print("-" * (sum(w) + 6))
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
