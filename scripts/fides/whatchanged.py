"""What an erasure changed in the sample shop's database, read from the database itself.

`snapshot` reads, for each person (by e-mail), every row the sample's dataset links to them
(customer, address, payment_card, orders, order_item, login, visit, service_request,
report, employee) with its key, and the row count of every table. `changes` reads the same
rows again by their keys and counts, per engine, the columns whose value changed and the
rows that are gone. A visit row's key is its e-mail, so visit rows are counted as the rows
that still carry the person's address.
"""
from collections import Counter

import psycopg2
import psycopg2.extras

TABLES = ["address", "customer", "employee", "login", "order_item", "orders",
          "payment_card", "product", "report", "service_request", "visit"]
# Primary keys of the sample's tables (postgres_sample.sql); visit's contains the e-mail.
KEYS = {"address": ["id"], "customer": ["id"], "employee": ["id"], "login": ["id"],
        "order_item": ["order_id", "item_no"], "orders": ["id"], "payment_card": ["id"],
        "report": ["id"], "service_request": ["id"]}


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _rows(cur, sql, args):
    cur.execute(sql, args)
    return [dict(r) for r in cur.fetchall()]


def person_rows(conn, email):
    """Every row of one person, by table."""
    cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    out = {"customer": _rows(cur, "SELECT * FROM customer WHERE email = %s", (email,))}
    ids = [c["id"] for c in out["customer"]] or [-1]
    out["payment_card"] = _rows(cur, "SELECT * FROM payment_card WHERE customer_id = ANY(%s)", (ids,))
    out["orders"] = _rows(cur, "SELECT * FROM orders WHERE customer_id = ANY(%s)", (ids,))
    out["order_item"] = _rows(cur, "SELECT * FROM order_item WHERE order_id = ANY(%s)",
                              ([o["id"] for o in out["orders"]],))
    out["login"] = _rows(cur, "SELECT * FROM login WHERE customer_id = ANY(%s)", (ids,))
    addr = {c["address_id"] for c in out["customer"]}
    addr |= {o["shipping_address_id"] for o in out["orders"]}
    addr |= {p["billing_address_id"] for p in out["payment_card"]}
    out["address"] = _rows(cur, "SELECT * FROM address WHERE id = ANY(%s)", ([a for a in addr if a is not None],))
    out["visit"] = _rows(cur, "SELECT * FROM visit WHERE email = %s", (email,))
    out["service_request"] = _rows(cur, "SELECT * FROM service_request WHERE email = %s OR alt_email = %s",
                                   (email, email))
    out["report"] = _rows(cur, "SELECT * FROM report WHERE email = %s", (email,))
    out["employee"] = _rows(cur, "SELECT * FROM employee WHERE email = %s", (email,))
    return out


def counts(conn):
    cur = conn.cursor()
    out = {}
    for t in TABLES:
        cur.execute(f"SELECT count(*) FROM {t}")
        out[t] = cur.fetchone()[0]
    return out


def snapshot(dsn, emails):
    conn = connect(dsn)
    snap = {"people": {e: person_rows(conn, e) for e in emails}, "counts": counts(conn)}
    conn.close()
    return snap


def changes(dsn, before, emails_by_engine):
    """Per engine: changed columns and removed rows, counted over its people."""
    conn = connect(dsn)
    cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    report = {}
    for engine, emails in emails_by_engine.items():
        changed, gone, examples = Counter(), Counter(), {}
        visits_before = visits_after = 0
        for e in emails:
            rows = before["people"][e]
            for table, key in KEYS.items():
                for old in rows[table]:
                    where = " AND ".join(f"{k} = %s" for k in key)
                    cur.execute(f"SELECT * FROM {table} WHERE {where}", [old[k] for k in key])
                    new = cur.fetchone()
                    if new is None:
                        gone[table] += 1
                        continue
                    for col, v in old.items():
                        if new[col] != v:
                            changed[f"{table}.{col}"] += 1
                            examples.setdefault(f"{table}.{col}", new[col])
            visits_before += len(rows["visit"])
            cur.execute("SELECT count(*) AS n FROM visit WHERE email = %s", (e,))
            visits_after += cur.fetchone()["n"]
        report[engine] = {"changed": dict(changed), "gone": dict(gone), "examples": examples,
                          "visits_before": visits_before, "visits_after": visits_after}
    after = counts(conn)
    conn.close()
    delta = {t: after[t] - before["counts"][t] for t in TABLES if after[t] != before["counts"][t]}
    return report, delta


def describe(engine, r):
    """One engine's changes, in words."""
    parts = [f"{col} in {n} rows" for col, n in sorted(r["changed"].items())]
    visits_masked = r["visits_before"] - r["visits_after"]
    if visits_masked:
        parts.append(f"visit.email in {visits_masked} of {r['visits_before']} visit rows")
    text = "changed " + (", ".join(parts) if parts else "nothing")
    gone = ", ".join(f"{t} {n}" for t, n in sorted(r["gone"].items()))
    text += f"; rows removed: {gone or 'none'}"
    ex = ", ".join(f"{c} = {str(v)[:20]}... ({len(str(v))} chars)" for c, v in sorted(r["examples"].items()))
    if ex:
        text += f"; e.g. {ex}"
    return text
