"""Assertions on the Helm chart's rendered objects (a stand-in for helm-unittest, which cannot be
installed offline). Usage: assert_rendered.py SCENARIO RENDERED.yaml CLI_RS [RULES_OUT.yaml]

SCENARIO is the ci/*-values.yaml name (default, tls, monitoring, large); CLI_RS is
crates/server/src/cli.rs, read to check that every CHRONICLE_* variable and every flag the chart
passes exists in `chronicle server start` / `chronicle cluster init`. With RULES_OUT, the
PrometheusRule's groups are written there for promtool."""

import json
import re
import sys

import yaml

scenario, rendered, cli_rs = sys.argv[1:4]
rules_out = sys.argv[4] if len(sys.argv) > 4 else None
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(f"[{scenario}] {msg}")
    return cond


def by_kind(kind):
    return [d for d in docs if d["kind"] == kind]


def one(kind, name_suffix):
    found = [d for d in by_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
    check(len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}")
    return found[0] if found else {}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- what cli.rs accepts -------------------------------------------------------------------
cli = open(cli_rs).read()
known_env = set(re.findall(r'env = "(CHRONICLE_[A-Z_]+)"', cli))
check(len(known_env) >= 10, f"read only {len(known_env)} CHRONICLE_* variables from {cli_rs}")


def struct_flags(name):
    body = re.search(r"pub struct %s \{(.*?)\n\}" % name, cli, re.S).group(1)
    flags = set()
    for attrs, field in re.findall(r"((?:\s*#\[arg\([^\]]*\)\]\s*)+)\s*pub (\w+):", body):
        long = re.search(r'long = "([a-z-]+)"', attrs)
        flags.add(long.group(1) if long else field.replace("_", "-"))
    return flags


start_flags = struct_flags("Start")
check({"role", "replicated", "namespace"} <= start_flags, f"Start flags read: {start_flags}")

workloads = by_kind("StatefulSet") + by_kind("Deployment") + by_kind("Job")
release_labels = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                  "app.kubernetes.io/managed-by", "helm.sh/chart")

# --- every object ------------------------------------------------------------------------------
for d in docs:
    labels = d["metadata"].get("labels", {})
    for key in release_labels:
        check(key in labels, f"{d['kind']}/{d['metadata']['name']} lacks label {key}")
    check(d["metadata"].get("namespace") in ("chronicle", "monitoring"),
          f"{d['kind']}/{d['metadata']['name']} has no explicit namespace")

# --- pods: security, probes, env, checksum -----------------------------------------------------
checksums = set()
for w in workloads:
    name = f"{w['kind']}/{w['metadata']['name']}"
    tpl = w["spec"]["template"]
    spec = tpl["spec"]
    if w["kind"] != "Job":
        check(matches(w["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"]),
              f"{name}: selector does not match its pod labels")
        ann = tpl["metadata"].get("annotations", {})
        check("checksum/config" in ann, f"{name}: no checksum/config annotation")
        checksums.add(ann.get("checksum/config"))
    psc = spec.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp")
    check(spec.get("automountServiceAccountToken") is False, f"{name}: service account token")
    for c in spec["containers"]:
        cname = f"{name}[{c['name']}]"
        sc = c.get("securityContext", {})
        check(sc.get("runAsNonRoot") is True, f"{cname}: runAsNonRoot")
        check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{cname}: drop ALL")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cname}: seccomp")
        check(c.get("resources", {}).get("requests"), f"{cname}: no resource requests")
        check(c["image"].endswith(":0.1.0") or ":" in c["image"], f"{cname}: image tag")
        defined = set()
        for e in c.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", str(e.get("value", ""))):
                check(ref in defined, f"{cname}: {e['name']} uses $({ref}) before it is defined")
            defined.add(e["name"])
            if e["name"].startswith("CHRONICLE_"):
                check(e["name"] in known_env, f"{cname}: {e['name']} is not a variable of the CLI")
        for a in c.get("args", []):
            if a.startswith("--"):
                flag = a[2:].split("=")[0]
                check(flag in start_flags, f"{cname}: flag --{flag} is not in `server start`")
        if w["kind"] == "Job":
            continue
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check("metrics" in ports, f"{cname}: no metrics port")
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            get = c.get(probe, {}).get("httpGet", {})
            check(get.get("path") == path and get.get("port") in ports,
                  f"{cname}: {probe} is not GET {path} on a named port")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        check("/tmp" in mounts, f"{cname}: no writable /tmp (the root filesystem is read-only)")
        if scenario == "tls":
            for mp in ("/etc/chronicle/tls/internode", "/etc/chronicle/tls/frontend"):
                check(mounts.get(mp, {}).get("readOnly") is True, f"{cname}: TLS mount {mp}")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            check(env.get("CHRONICLE_INTERNODE_TLS_CA") == "/etc/chronicle/tls/internode/ca.crt",
                  f"{cname}: node-to-node TLS not passed to the server")
            is_frontend = "--role=frontend" in c.get("args", [])
            check(("CHRONICLE_TLS_CERT" in env) == is_frontend,
                  f"{cname}: the public API's TLS belongs to frontends only")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        is_frontend = "--role=frontend" in c.get("args", [])
        jwks = {"tls": "/etc/chronicle/jwks/jwks.json",
                "monitoring": "https://idp.example.com/.well-known/jwks.json"}.get(scenario)
        check(env.get("CHRONICLE_JWKS") == (jwks if is_frontend else None),
              f"{cname}: CHRONICLE_JWKS {env.get('CHRONICLE_JWKS')} (authorization is the frontends')")
        if is_frontend and scenario == "tls":
            check(mounts.get("/etc/chronicle/jwks", {}).get("readOnly") is True,
                  f"{cname}: the key set Secret is not mounted")
            check(env.get("CHRONICLE_JWT_AUDIENCE") == "chronicle", f"{cname}: audience")
check(len(checksums) == 1, f"pods carry different config checksums: {checksums}")
if scenario == "tls":
    init = [w for w in docs if w["kind"] == "Job"]
    for job in init:
        c = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"] for e in c.get("env", [])}
        check("CHRONICLE_INTERNODE_TLS_CERT" in env and c.get("volumeMounts"),
              "the init Job lacks node-to-node TLS (cluster init talks to the history pods)")
    secrets = {v["secret"]["secretName"] for w in workloads for v in
               w["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    check(secrets == {"chronicle-internode-tls", "chronicle-frontend-tls", "chronicle-jwks"},
          f"TLS secrets mounted: {secrets}")

# --- config -------------------------------------------------------------------------------------
config = one("ConfigMap", "-config").get("data", {})
for key in config:
    check(key in known_env, f"config key {key} is not a variable of the CLI")

# --- history StatefulSet and its headless Service ----------------------------------------------
sts = one("StatefulSet", "-history")
replicas = {"large": 5}.get(scenario, 3)
check(sts["spec"]["replicas"] == replicas, f"history replicas {sts['spec']['replicas']}")
check(sts["spec"]["podManagementPolicy"] == "Parallel", "history podManagementPolicy")
check(sts["spec"]["updateStrategy"]["type"] == "RollingUpdate", "history updateStrategy")
vct = sts["spec"]["volumeClaimTemplates"]
check(len(vct) == 1 and vct[0]["metadata"]["name"] == "data", "history volumeClaimTemplates")
hc = sts["spec"]["template"]["spec"]["containers"][0]
check({"name": "data", "mountPath": "/data"} in hc["volumeMounts"], "history mounts data at /data")
check("--replicated" in hc["args"] and "--role=history" in hc["args"], f"history args {hc['args']}")
env = {e["name"]: e.get("value") for e in hc["env"]}
headless = one("Service", sts["spec"]["serviceName"])
check(headless.get("spec", {}).get("clusterIP") == "None", "history Service is not headless")
check(headless.get("spec", {}).get("publishNotReadyAddresses") is True,
      "history headless Service does not publish not-ready pods")
check(env.get("CHRONICLE_ADVERTISE_ADDR", "").startswith(
    f"$(POD_NAME).{sts['spec']['serviceName']}.$(POD_NAMESPACE).svc."),
    f"advertise address {env.get('CHRONICLE_ADVERTISE_ADDR')}")
expected_addrs = [f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}.chronicle.svc."
                  f"cluster.local:7234" for i in range(replicas)]
check(config.get("CHRONICLE_HISTORY_ADDR") == ",".join(expected_addrs),
      f"CHRONICLE_HISTORY_ADDR {config.get('CHRONICLE_HISTORY_ADDR')}")
shards = {"large": "256"}.get(scenario, "64")
check(config.get("CHRONICLE_NUM_SHARDS") == shards, "CHRONICLE_NUM_SHARDS")
if scenario == "large":
    check(hc["args"].count("--namespace=orders") == 1, "extra namespaces passed")

# --- frontend and matching ---------------------------------------------------------------------
fe = one("Deployment", "-frontend")
# Matching: a StatefulSet whose pods' stable names make the ring's node list, the same in every
# process (history, frontend and matching read it from the one ConfigMap).
ma = one("StatefulSet", "-matching")
check(not [d for d in by_kind("Deployment") if d["metadata"]["name"].endswith("-matching")],
      "matching is still a Deployment")
matching_replicas = {"large": 4}.get(scenario, 2)
check(ma.get("spec", {}).get("replicas") == matching_replicas,
      f"matching replicas {ma.get('spec', {}).get('replicas')}")
check(ma.get("spec", {}).get("podManagementPolicy") == "Parallel", "matching podManagementPolicy")
check(ma.get("spec", {}).get("updateStrategy", {}).get("type") == "RollingUpdate",
      "matching updateStrategy")
check("volumeClaimTemplates" not in ma.get("spec", {}), "matching stores nothing: no PVC")
mheadless = one("Service", ma.get("spec", {}).get("serviceName", "?"))
check(mheadless.get("spec", {}).get("clusterIP") == "None", "matching Service is not headless")
check(mheadless.get("spec", {}).get("publishNotReadyAddresses") is True,
      "matching headless Service does not publish not-ready pods")
check({p["name"] for p in mheadless.get("spec", {}).get("ports", [])} == {"internal", "metrics"},
      "matching headless Service ports")
check(not [s for s in by_kind("Service") if s["metadata"]["name"].endswith("-matching")],
      "a ClusterIP matching Service would hide the ring's nodes")
expected_matching = [f"{ma['metadata']['name']}-{i}.{ma['spec']['serviceName']}.chronicle.svc."
                     f"cluster.local:7234" for i in range(matching_replicas)]
check(config.get("CHRONICLE_MATCHING_ADDR") == ",".join(expected_matching),
      f"CHRONICLE_MATCHING_ADDR {config.get('CHRONICLE_MATCHING_ADDR')}")
# Each matching pod advertises the name the ring lists it under, so it knows its own place.
menv = {e["name"]: e.get("value") for e in ma["spec"]["template"]["spec"]["containers"][0]["env"]}
check(menv.get("CHRONICLE_ADVERTISE_ADDR") ==
      f"$(POD_NAME).{ma['spec']['serviceName']}.$(POD_NAMESPACE).svc.cluster.local:7234",
      f"matching advertise address {menv.get('CHRONICLE_ADVERTISE_ADDR')}")
check(config.get("CHRONICLE_TASK_QUEUE_PARTITIONS") == {"large": "8"}.get(scenario, "4"),
      f"CHRONICLE_TASK_QUEUE_PARTITIONS {config.get('CHRONICLE_TASK_QUEUE_PARTITIONS')}")
# Every history, matching and frontend pod names itself in its log lines, and reads the ring's
# node list from the ConfigMap (no pod overrides it).
for w in (sts, ma, fe):
    c = w["spec"]["template"]["spec"]["containers"][0]
    wenv = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(wenv.get("CHRONICLE_NODE_NAME") == "$(POD_NAME)",
          f"{w['metadata']['name']}: CHRONICLE_NODE_NAME {wenv.get('CHRONICLE_NODE_NAME')}")
    check("CHRONICLE_MATCHING_ADDR" not in wenv, f"{w['metadata']['name']} overrides the matching list")
    check(any(e.get("configMapRef", {}).get("name", "").endswith("-config") for e in c.get("envFrom", [])),
          f"{w['metadata']['name']} does not read the ConfigMap")
hpa = by_kind("HorizontalPodAutoscaler")
if scenario == "large":
    check(len(hpa) == 1 and hpa[0]["spec"]["scaleTargetRef"]["name"] == fe["metadata"]["name"],
          "frontend HPA")
    check("replicas" not in fe["spec"], "an autoscaled frontend must not set replicas")
else:
    check(not hpa, "HPA rendered although autoscaling is off")

# --- Services select pods; the metrics port is named on the scraped ones ------------------------
pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
for svc in by_kind("Service"):
    check(any(matches(svc["spec"]["selector"], l) for l in pod_labels),
          f"Service {svc['metadata']['name']} selects no pod")
    if svc["metadata"]["labels"].get("app.kubernetes.io/headless") == "true":
        check(any(p["name"] == "metrics" for p in svc["spec"]["ports"]),
              f"headless Service {svc['metadata']['name']} has no metrics port")

# --- PDBs ---------------------------------------------------------------------------------------
pdbs = {d["metadata"]["name"].rsplit("-", 1)[1]: d["spec"] for d in by_kind("PodDisruptionBudget")}
check(set(pdbs) == {"history", "frontend", "matching"}, f"PDBs {set(pdbs)}")
check(pdbs.get("history", {}).get("maxUnavailable") == 1, "history PDB maxUnavailable 1")
check(pdbs.get("frontend", {}).get("minAvailable") == (2 if scenario == "large" else 1),
      "frontend PDB minAvailable")
for name, spec in pdbs.items():
    check(any(matches(spec["selector"]["matchLabels"], l) for l in pod_labels),
          f"PDB {name} selects no pod")

# --- NetworkPolicies select pods, and their peers exist -------------------------------------------
nps = by_kind("NetworkPolicy")
check(len(nps) == 3, f"{len(nps)} NetworkPolicies")
for np in nps:
    check(any(matches(np["spec"]["podSelector"]["matchLabels"], l) for l in pod_labels),
          f"NetworkPolicy {np['metadata']['name']} selects no pod")
    for rule in np["spec"]["ingress"]:
        for peer in rule.get("from", []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                check(any(matches(peer["podSelector"]["matchLabels"], l) for l in pod_labels),
                      f"NetworkPolicy {np['metadata']['name']} admits a peer that matches no pod")
hist_np = [np for np in nps if np["metadata"]["name"].endswith("-history")]
if hist_np:
    peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
             for r in hist_np[0]["spec"]["ingress"] for p in r.get("from", []) if "podSelector" in p}
    check(peers == {"history", "matching", "frontend", "init"}, f"history admits {peers}")
match_np = [np for np in nps if np["metadata"]["name"].endswith("-matching")]
if match_np:
    peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
             for r in match_np[0]["spec"]["ingress"] for p in r.get("from", []) if "podSelector" in p}
    # Matching nodes forward to the owners of root partitions: they must reach each other.
    check(peers == {"history", "matching", "frontend"}, f"matching admits {peers}")

# --- init job -----------------------------------------------------------------------------------
jobs = by_kind("Job")
check(len(jobs) == 1, "one init Job")
if jobs:
    job = jobs[0]
    ann = job["metadata"].get("annotations", {})
    jenv = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(jenv.get("CHRONICLE_CLUSTER_NODES") == config.get("CHRONICLE_HISTORY_ADDR"),
          "the init job names every history pod")
    check(jenv.get("CHRONICLE_NUM_SHARDS") == shards, "the init job's shard count")
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    check("chronicle cluster init" in script and "already belongs to a cluster" in script,
          "the init job runs cluster init and accepts an initialised cluster")
    if scenario == "large":
        check(not ann and job["metadata"]["name"].endswith("-init-r1"),
              "init.helmHook=false: a plain Job named per revision")
    else:
        check(ann.get("helm.sh/hook") == "post-install", "the init job is a post-install hook")

# --- dashboards ---------------------------------------------------------------------------------
dash = [d for d in by_kind("ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
check(len(dash) == 3, f"{len(dash)} dashboard ConfigMaps")
for d in dash:
    check(d["metadata"]["labels"].get("grafana_dashboard") == "1",
          f"{d['metadata']['name']}: grafana_dashboard label")
    for key, text in d["data"].items():
        check(json.loads(text).get("uid"), f"{d['metadata']['name']}/{key}: not a dashboard")
    if scenario == "monitoring":
        check(d["metadata"]["namespace"] == "monitoring" and
              d["metadata"].get("annotations", {}).get("grafana_folder") == "Chronicle",
              "dashboards namespace and folder")

# --- Prometheus Operator objects: only with the CRDs ----------------------------------------------
sms, prs = by_kind("ServiceMonitor"), by_kind("PrometheusRule")
if scenario == "monitoring":
    check(len(sms) == 1, "ServiceMonitor rendered when monitoring.coreos.com/v1 exists")
    for sm in sms:
        check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack",
              "ServiceMonitor additionalLabels")
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in by_kind("Service") if matches(sel, s["metadata"]["labels"])]
        comps = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in targets}
        check(comps == {"history", "frontend", "matching"}, f"ServiceMonitor selects {comps}")
        for s in targets:
            check(any(p["name"] == "metrics" for p in s["spec"]["ports"]),
                  f"ServiceMonitor target {s['metadata']['name']} has no metrics port")
        ep = sm["spec"]["endpoints"][0]
        check(ep["port"] == "metrics" and ep["interval"] == "15s", "ServiceMonitor endpoint")
        check(any(r.get("targetLabel") == "temporal_namespace" for r in ep["metricRelabelings"]),
              "ServiceMonitor relabels exported_namespace to temporal_namespace")
        check(any(r.get("targetLabel") == "chronicle_component" for r in ep["relabelings"]),
              "ServiceMonitor sets chronicle_component")
    check(len(prs) == 1, "PrometheusRule rendered")
    if prs and rules_out:
        groups = prs[0]["spec"]["groups"]
        check(any(g["name"] == "chronicle.rocksdb" for g in groups), "Raft and RocksDB rules included")
        yaml.safe_dump({"groups": groups}, open(rules_out, "w"), sort_keys=False)
else:
    check(not sms and not prs, "Prometheus Operator objects rendered without the CRDs")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"assert_rendered: {scenario}: {len(docs)} objects, all assertions hold")
