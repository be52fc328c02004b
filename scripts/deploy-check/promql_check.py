"""Dashboards and alert rules against the metrics Chronicle really exports.

    promql_check.py dashboards FILE.json...
        Structural check of Grafana dashboards: JSON, a `datasource` variable and no datasource
        uid written down, unique panel ids, a 24-column grid, a query on every data panel, and
        only defined template variables in queries.
    promql_check.py expect PROMETHEUS_URL SECONDS EXPR...
        Each EXPR must return data (with a leading "!": no data) within SECONDS; "rule:Name"
        stands for that alert's expression.
    promql_check.py scrape PROMETHEUS_URL RULES.yaml... -- FILE.json...
        Against a Prometheus that scraped a loaded Chronicle: every dashboard query and every
        alert expression must run; every series selector in them must return data; every
        dashboard query must return data. Families in ALLOWED_EMPTY (they need a fault) may be
        empty: each such case is printed. Every loaded rule must be healthy.
"""

import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

# Families that a short, healthy start-dev run cannot produce, and why.
ALLOWED_EMPTY = {
    "service_errors": "needs an unexpected server error (a fault)",
    "service_errors_resource_exhausted": "needs a request over the message size limit",
    "persistence_errors": "needs a failing write (a shard stopping, no leader)",
    "task_errors": "needs a failing timer or transfer task (a fault)",
    "poll_timeouts": "needs a poll that waits its full long-poll time (about a minute)",
    "chronicle_sticky_worker_unavailable": "needs a sticky worker that went away",
    "no_poller_tasks": "needs a task queue nobody polled for two minutes",
}
RULE_FILES = ["deploy/prometheus/chronicle-alerts.yaml"]
# What the Grafana variables stand for in a query run outside Grafana.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m",
                 "$namespace": ".*", "$temporal_namespace": ".*"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "atan2", "inf", "nan"}
LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def selectors(expr):
    """The series selectors (`name{matchers}`) of a PromQL expression."""
    out, i, n = [], 0, len(expr)

    def skip_ws(j):
        while j < n and expr[j].isspace():
            j += 1
        return j

    def skip_group(j, open_, close):  # from an opening bracket to after its match, over strings
        depth = 0
        while j < n:
            c = expr[j]
            if c in "\"'`":
                j = expr.index(c, j + 1) + 1
                continue
            if c == open_:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise ValueError(f"unbalanced {open_} in {expr}")

    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = expr.index(c, i + 1) + 1
        elif c == "[":
            i = skip_group(i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            i += 1
            while i < n and (expr[i].isalnum() or expr[i] in "._"
                             or (expr[i] in "+-" and expr[i - 1] in "eE")):
                i += 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            word, k = expr[i:j], skip_ws(j)
            if word in LIST_KEYWORDS:
                i = skip_group(k, "(", ")") if k < n and expr[k] == "(" else k
            elif (word in KEYWORDS or (k < n and expr[k] == "(")
                  or re.match(r"(by|without)\s*\(", expr[k:])):  # `sum by (..) (..)`
                i = j
            else:
                end = skip_group(k, "{", "}") if k < n and expr[k] == "{" else j
                out.append((word, expr[i:end]))
                i = end
        else:
            i += 1
    return out


def substitute(expr):
    for var, value in SUBSTITUTIONS.items():
        expr = expr.replace(var, value)
    return expr


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_queries(path):
    board = json.load(open(path))
    for panel in walk_panels(board["panels"]):
        for target in panel.get("targets", []):
            yield board["uid"], panel["title"], target["refId"], target["expr"]


def check_dashboards(paths):
    failures, uids = [], set()
    for path in paths:
        fail = lambda msg: failures.append(f"{path}: {msg}")  # noqa: E731
        try:
            board = json.load(open(path))
        except ValueError as e:
            fail(f"not JSON: {e}")
            continue
        for key in ("uid", "title", "schemaVersion", "panels", "templating"):
            if key not in board:
                fail(f"no {key}")
        if board.get("uid") in uids:
            fail(f"uid {board.get('uid')} used twice")
        uids.add(board.get("uid"))
        variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
        ds = variables.get("datasource", {})
        if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            fail("no `datasource` variable of type datasource for prometheus")

        def no_fixed_uid(node, where):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "datasource" and not (
                            value is None or (isinstance(value, dict) and
                                              value.get("uid") == "${datasource}")):
                        fail(f"{where}: datasource {value!r} is not the ${{datasource}} variable")
                    no_fixed_uid(value, f"{where}.{key}")
            elif isinstance(node, list):
                for item in node:
                    no_fixed_uid(item, where)
        no_fixed_uid(board.get("panels", []), "panels")
        ids = set()
        for panel in walk_panels(board.get("panels", [])):
            title = panel.get("title", "?")
            if panel.get("id") in ids:
                fail(f"panel id {panel.get('id')} used twice")
            ids.add(panel.get("id"))
            pos = panel.get("gridPos", {})
            if not (0 <= pos.get("x", -1) and pos.get("x", 0) + pos.get("w", 99) <= 24
                    and pos.get("h", 0) > 0):
                fail(f"panel {title!r}: gridPos {pos}")
            if panel.get("type") in ("row", "text"):
                continue
            if not panel.get("targets"):
                fail(f"panel {title!r} has no query")
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if not expr.strip():
                    fail(f"panel {title!r} {target.get('refId')}: empty query")
                for var in re.findall(r"\$\{?(\w+)", expr):
                    if var not in variables and var not in GRAFANA_BUILTINS:
                        fail(f"panel {title!r}: query uses undefined ${var}")
                try:
                    if not selectors(expr):
                        fail(f"panel {title!r}: no series selector in {expr}")
                except ValueError as e:
                    fail(f"panel {title!r}: {e}")
        print(f"dashboards: {path}: {len(ids)} panels, "
              f"{sum(1 for _ in dashboard_queries(path))} queries")
    return failures


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        raise ValueError(body.get("error", body))
    data = body["data"]
    return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]


def why_empty(family):
    return ALLOWED_EMPTY.get(family)


def check_scrape(base, rule_files, dashboards):
    failures, allowed, counts = [], [], {"queries": 0, "selectors": 0}
    checked_selectors = {}

    def check_selectors(origin, expr):
        for family, sel in selectors(expr):
            if sel in checked_selectors:
                continue
            counts["selectors"] += 1
            has = bool(query(base, f"count({sel})"))
            checked_selectors[sel] = has
            if not has:
                reason = why_empty(family)
                if reason:
                    allowed.append(f"{family}: {reason}")
                else:
                    failures.append(f"{origin}: no series for {sel}")

    work = [(f"dashboard {uid} / {title} / {ref}", substitute(expr), True)
            for path in dashboards for uid, title, ref, expr in dashboard_queries(path)]
    for path in dashboards:
        board = json.load(open(path))
        for var in board["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var.get("definition", ""))
            if var["type"] == "query":
                if not m:
                    failures.append(f"{path}: variable {var['name']}: not label_values(...)")
                    continue
                work.append((f"dashboard {board['uid']} / variable {var['name']}",
                             f"count by ({m.group(2)}) ({m.group(1)})", True))
    for path in rule_files:
        for group in yaml.safe_load(open(path))["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                work.append((f"rule {group['name']} / {name}", rule["expr"], False))
    for origin, expr, needs_data in work:
        counts["queries"] += 1
        try:
            result = query(base, expr)
        except ValueError as e:
            failures.append(f"{origin}: query failed: {e}")
            continue
        check_selectors(origin, expr)
        if needs_data and not result:
            reasons = sorted({why_empty(f) for f, _ in selectors(expr) if why_empty(f)})
            if reasons:
                allowed.append(f"{origin}: empty ({'; '.join(reasons)})")
            else:
                failures.append(f"{origin}: no data for {expr}")
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=30) as resp:
        groups = json.load(resp)["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    for r in loaded:
        if r.get("health") != "ok":
            failures.append(f"rule {r['name']}: health {r.get('health')}: {r.get('lastError')}")
    expected = sum(len(g["rules"]) for p in rule_files for g in yaml.safe_load(open(p))["groups"])
    if len(loaded) != expected:
        failures.append(f"Prometheus loaded {len(loaded)} rules, the files have {expected}")
    firing = [r["name"] for r in loaded if r.get("state") == "firing"]
    if firing:
        failures.append(f"alerts firing on a healthy server: {firing}")
    for line in sorted(set(allowed)):
        print(f"  allowed empty: {line}")
    print(f"scrape: {counts['queries']} queries and {counts['selectors']} selectors run, "
          f"{len(loaded)} rules evaluated healthy, {len(set(allowed))} allowed-empty cases")
    return failures


def check_expect(base, within, expectations):
    """Each expectation is an expression that must return data ("!EXPR": must return none),
    retried until `within` seconds have passed."""
    import time
    deadline, pending = time.time() + within, list(expectations)
    while True:
        still = []
        for e in pending:
            empty_wanted = e.startswith("!")
            expr = e[1:] if empty_wanted else e
            try:
                got = bool(query(base, expr))
            except ValueError as err:
                return [f"{expr}: {err}"]
            if got == empty_wanted:
                still.append(e)
        pending = still
        if not pending or time.time() > deadline:
            break
        time.sleep(1)
    for e in expectations:
        print(f"  {'FAIL' if e in pending else 'ok  '} {e}")
    return [f"expectation not met within {within} s: {e}" for e in pending]


def rule_expr(rule_files, alert, severity=None):
    for path in rule_files:
        for group in yaml.safe_load(open(path))["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert and severity in (None, rule["labels"]["severity"]):
                    return rule["expr"].strip()
    raise SystemExit(f"no rule {alert}")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "expect":
        # expect URL WITHIN_SECONDS EXPR... ; "rule:NAME" in an EXPR is that alert's expression
        def expand(e):
            return re.sub(r"rule:(\w+)", lambda m: f"({rule_expr(RULE_FILES, m.group(1))})", e)
        failures = check_expect(args[0], float(args[1]), [expand(e) for e in args[2:]])
    elif mode == "dashboards":
        failures = check_dashboards(args)
    elif mode == "scrape":
        sep = args.index("--")
        failures = check_scrape(args[0], args[1:sep], args[sep + 1:])
    else:
        sys.exit(__doc__)
    if failures:
        print("\n".join(f"FAIL {f}" for f in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
