"""Points a running Fides server at the benchmark database: the connection, its secret,
Fides' own sample dataset and the dataset config. Idempotent (PATCH/PUT/upsert).

usage: setup_fides.py FIDES_URL DBNAME USER PASSWORD DATASET_YML
"""
import sys

import requests
import yaml

base, dbname, user, password, dataset_file = sys.argv[1].rstrip("/") + "/api/v1", *sys.argv[2:6]
CONN = "postgres_example"

tok = requests.post(f"{base}/oauth/token", data={"grant_type": "client_credentials",
                    "client_id": "fidesadmin", "client_secret": "fidesadminsecret"}, timeout=30)
tok.raise_for_status()
session = requests.Session()
session.headers["Authorization"] = f"Bearer {tok.json()['access_token']}"


def call(method, path, **kw):
    r = session.request(method, base + path, timeout=60, **kw)
    if r.status_code >= 300:
        sys.exit(f"Fides setup: {method} {path} -> {r.status_code} {r.text[:800]}")
    return r.json()


call("PATCH", "/connection", json=[{"key": CONN, "name": "Sample shop (benchmark)",
     "connection_type": "postgres", "access": "write", "disabled": False}])
call("PUT", f"/connection/{CONN}/secret", json={"host": "127.0.0.1", "port": 5432,
     "dbname": dbname, "username": user, "password": password})
with open(dataset_file) as f:
    ds = yaml.safe_load(f)["dataset"][0]
call("POST", "/dataset/upsert", json=[ds])
call("PATCH", f"/connection/{CONN}/datasetconfig",
     json=[{"fides_key": ds["fides_key"], "ctl_dataset_fides_key": ds["fides_key"]}])
test = call("GET", f"/connection/{CONN}/test")
if test.get("test_status") != "succeeded":
    sys.exit(f"Fides setup: the connection test failed: {test}")
keys = {p["key"] for p in call("GET", "/dsr/policy")["items"]}
missing = {"default_access_policy", "default_erasure_policy"} - keys
if missing:
    sys.exit(f"Fides setup: policies missing: {sorted(missing)}")
print(f"Fides: connection {CONN} -> {dbname}, dataset {ds['fides_key']}, test succeeded")
