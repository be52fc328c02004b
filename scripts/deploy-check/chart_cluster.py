"""Runs the Helm chart's cluster as local processes, from the rendered manifests: each history
pod, each matching pod, one frontend pod and the init Job get exactly the args, ConfigMap
variables and env the chart gives them. What Kubernetes would provide is stood in for: a pod IP
is a loopback address (127.0.0.11, .12, ...), DNS names become those addresses, the data PVC is a
directory, and the pod's bind address 0.0.0.0 becomes its loopback address (one machine, one
port per role). Usage:

    chart_cluster.py RENDERED.yaml CHRONICLE_BIN WORKDIR STATE.json

Starts the pods, runs the init Job's script, waits until every pod's /health/ready answers 200
(the readiness probe), writes STATE.json (pids, scrape targets, the frontend address), then waits;
SIGUSR1 starts again every pod whose process exited; SIGTERM stops every process it started."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

rendered, binary, workdir, state_path = sys.argv[1:5]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
sts = next(d for d in docs if d["kind"] == "StatefulSet")
matching = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-matching"))
sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-history"))
deployments = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in docs if d["kind"] == "Deployment"}
job = next(d for d in docs if d["kind"] == "Job")
namespace = sts["metadata"]["namespace"]
domain = f"{namespace}.svc.cluster.local"

pods = {}  # pod name -> loopback ip
hosts = {}  # a pod's DNS name under its headless Service -> its ip
for i in range(sts["spec"]["replicas"]):
    pods[f"{sts['metadata']['name']}-{i}"] = f"127.0.0.{11 + i}"
    hosts[f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}.{domain}"] = f"127.0.0.{11 + i}"
for i in range(matching["spec"]["replicas"]):
    pods[f"{matching['metadata']['name']}-{i}"] = f"127.0.0.{41 + i}"
    hosts[f"{matching['metadata']['name']}-{i}.{matching['spec']['serviceName']}.{domain}"] = f"127.0.0.{41 + i}"
pods[f"{deployments['frontend']['metadata']['name']}-0"] = "127.0.0.21"


def resolve(value):
    for host, ip in hosts.items():
        value = value.replace(host + ":", ip + ":")
    return value


def container_env(container, pod, ip):
    env = {k: resolve(str(v)) for k, v in config["data"].items()}
    fields = {"metadata.name": pod, "metadata.namespace": namespace}
    for e in container.get("env", []):
        if "valueFrom" in e:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[e["name"]] = resolve(re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"]))
    for key in ("CHRONICLE_FRONTEND_ADDR", "CHRONICLE_INTERNAL_ADDR"):
        if key in env:  # 0.0.0.0 in the pod's own network namespace
            env[key] = env[key].replace("0.0.0.0:", ip + ":")
    if "CHRONICLE_DATA_DIR" in env:
        env["CHRONICLE_DATA_DIR"] = os.path.join(workdir, pod)
    env["PATH"] = os.path.dirname(os.path.abspath(binary)) + ":" + os.environ["PATH"]
    return env


procs, state = {}, {"pods": {}, "namespace": namespace}


def start(pod, container, component):
    specs[pod] = (container, component)
    ip = pods[pod]
    env = container_env(container, pod, ip)
    args = [binary] + container["args"]
    log = open(os.path.join(workdir, f"{pod}.log"), "ab")
    procs[pod] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    state["pods"][pod] = {"pid": procs[pod].pid, "component": component,
                          "metrics": f"{ip}:{port}"}
    if component == "frontend":
        fport = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc-rpc")
        state["frontend"] = f"{ip}:{fport}"


def stop(*_):
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 15
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    sys.exit(0)


specs = {}  # pod -> (container, component), to start it again


def restart_exited(*_):
    """SIGUSR1: start every pod whose process has exited again, as its controller would (same
    args, env and data directory: the StatefulSet's pod keeps its name and PVC)."""
    for pod, p in list(procs.items()):
        if p.poll() is not None:
            start(pod, *specs[pod])
            print(f"chart cluster: restarted {pod} (pid {procs[pod].pid})", flush=True)


signal.signal(signal.SIGUSR1, restart_exited)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
try:
    for pod in pods:
        if pod.startswith(sts["metadata"]["name"] + "-"):
            start(pod, sts["spec"]["template"]["spec"]["containers"][0], "history")
    for i in range(matching["spec"]["replicas"]):
        start(f"{matching['metadata']['name']}-{i}",
              matching["spec"]["template"]["spec"]["containers"][0], "matching")
    start(f"{deployments['frontend']['metadata']['name']}-0",
          deployments["frontend"]["spec"]["template"]["spec"]["containers"][0], "frontend")
    # The init Job, as Kubernetes would run it once the pods exist.
    init = job["spec"]["template"]["spec"]["containers"][0]
    init_env = container_env(init, "init", "127.0.0.30")
    done = subprocess.run(init["command"], env=init_env, capture_output=True, text=True, timeout=120)
    print("init job:", (done.stdout + done.stderr).strip().replace("\n", " | "))
    if done.returncode != 0:
        raise SystemExit(f"the init job failed ({done.returncode})")
    # Re-running it (a retry, a new revision) must be harmless.
    again = subprocess.run(init["command"], env=init_env, capture_output=True, text=True, timeout=120)
    if again.returncode != 0:
        raise SystemExit(f"the init job's second run failed: {again.stdout}{again.stderr}")
    deadline = time.time() + 120
    waiting = set(state["pods"])
    while waiting and time.time() < deadline:
        for pod in sorted(waiting):
            if procs[pod].poll() is not None:
                raise SystemExit(f"{pod} exited; see {workdir}/{pod}.log")
            try:
                url = f"http://{state['pods'][pod]['metrics']}/health/ready"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        waiting.discard(pod)
            except OSError:
                pass
        time.sleep(0.5)
    if waiting:
        raise SystemExit(f"never ready: {sorted(waiting)}")
    with open(state_path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(state_path + ".tmp", state_path)
    print(f"chart cluster: {len(procs)} pods ready, frontend at {state['frontend']}")
    sys.stdout.flush()
    while True:
        time.sleep(3600)
except BaseException as e:
    if not isinstance(e, SystemExit) or e.code not in (0, None):
        print(f"chart cluster: {e}", file=sys.stderr)
        for pod in procs:
            log = os.path.join(workdir, f"{pod}.log")
            if os.path.exists(log):
                print(f"--- {pod} ---\n" + "".join(open(log).readlines()[-15:]), file=sys.stderr)
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    raise
