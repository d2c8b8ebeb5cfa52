"""What the Kubernetes schemas cannot check about deploy/kubernetes (run by validate-k8s).

The schemas say whether each resource is well formed; they cannot say whether the
resources fit sessiond and each other. This reads the resources kustomization.yaml lists,
and the sessiond.toml inside the ConfigMap, and checks the rules README.md promises:

- the pod's grace period outlasts server.shutdown_timeout, so no pod is killed mid-drain;
- startup and readiness probes ask /health/ready, liveness /health/live, on the port that
  metrics.listen binds, which listens beyond the pod's loopback;
- the memory request equals the limit, and limits.max_memory is "auto" (75% of that limit);
- non-root, no privilege escalation, no capabilities, a read-only root filesystem;
- a volume claim template is mounted at server.data_dir, the config where SESSIOND_CONFIG
  points, and every file the configuration names lies in a mounted volume;
- the Service is headless and is the StatefulSet's serviceName; it, the
  PodDisruptionBudget (at most one pod down) and the StatefulSet select the same pods;
- pod anti-affinity on the hostname.

Usage: k8s_policy.py [--list] [--extract-config FILE] DIR
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml

DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
# Kubernetes quantities as the manifests write memory: binary suffixes only.
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def seconds(text):
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"not a sessiond duration: {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def quantity(text):
    for suffix, factor in QUANTITY.items():
        if str(text).endswith(suffix):
            return int(str(text)[: -len(suffix)]) * factor
    return int(text)


def resources(directory):
    """The file names kustomization.yaml lists, and every document in them by kind."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files = kustomization.get("resources", [])
    by_kind = {}
    for name in files:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return files, by_kind


def one(by_kind, kind, problems):
    found = by_kind.get(kind, [])
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return None
    return found[0]


def check(by_kind, extract):
    problems = []
    sts = one(by_kind, "StatefulSet", problems)
    svc = one(by_kind, "Service", problems)
    pdb = one(by_kind, "PodDisruptionBudget", problems)
    cm = one(by_kind, "ConfigMap", problems)
    if None in (sts, svc, pdb, cm):
        return problems
    toml_text = cm["data"].get("sessiond.toml")
    if toml_text is None:
        return problems + ["the ConfigMap has no sessiond.toml"]
    if extract:
        Path(extract).write_text(toml_text)
    config = tomllib.loads(toml_text)
    pod = sts["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "sessiond"]

    def need(ok, message):
        if not ok:
            problems.append(message)

    # Shutdown: the drain plus the final fsync, well inside the grace period.
    shutdown = seconds(config.get("server", {}).get("shutdown_timeout", "10s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need(grace >= shutdown + 10,
         f"terminationGracePeriodSeconds {grace} is not at least 10 s beyond "
         f"server.shutdown_timeout ({shutdown:g} s)")

    # Probes on the metrics listener's port, by name or number.
    listen = config.get("metrics", {}).get("listen", "")
    need(listen.startswith("0.0.0.0:") or listen.startswith("[::]:"),
         f"metrics.listen {listen!r} is not reachable by the kubelet's probes")
    metrics_port = int(listen.rsplit(":", 1)[-1]) if ":" in listen else None
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for probe, path in [("startupProbe", "/health/ready"), ("readinessProbe", "/health/ready"),
                        ("livenessProbe", "/health/live")]:
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"no {probe} with httpGet")
            continue
        need(get.get("path") == path, f"{probe} asks {get.get('path')}, not {path}")
        port = ports.get(get.get("port"), get.get("port"))
        need(port == metrics_port, f"{probe} port {port} is not metrics.listen's {metrics_port}")
    tls_listen = config.get("server", {}).get("tls_listen", "")
    need(tls_listen.endswith(":" + str(ports.get("native-tls"))),
         f"container port native-tls {ports.get('native-tls')} is not server.tls_listen's "
         f"({tls_listen})")

    # Memory: the cap follows the limit; request == limit.
    res = container.get("resources", {})
    limit = res.get("limits", {}).get("memory")
    request = res.get("requests", {}).get("memory")
    need(limit is not None, "no memory limit")
    need(limit is not None and request is not None and quantity(limit) == quantity(request),
         f"memory request {request} differs from the limit {limit}")
    need(config.get("limits", {}).get("max_memory", "auto") == "auto",
         "limits.max_memory is not \"auto\", so it does not follow the pod's memory limit")
    need("cpu" in res.get("requests", {}), "no cpu request")

    # Non-root and read-only.
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True, "the pod does not set runAsNonRoot: true")
    need(psc.get("runAsUser", 0) != 0, "the pod runs as uid 0")
    need(csc.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    need(csc.get("allowPrivilegeEscalation") is False, "privilege escalation is allowed")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")

    # Mounts: the data directory is a claim template; the config and the files it names are
    # mounted.
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    data_dir = config.get("server", {}).get("data_dir")
    need(mounts.get(data_dir) in claims,
         f"server.data_dir {data_dir} is not a volumeClaimTemplate's mount")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    config_path = env.get("SESSIOND_CONFIG", "/etc/sessiond/sessiond.toml")
    need(mounts.get(str(Path(config_path).parent)) == "config",
         f"SESSIOND_CONFIG {config_path} is not in the ConfigMap's mount")
    named = re.findall(r'^\s*\w+_file\s*=\s*"([^"]+)"', toml_text, re.M)
    for path in named:
        need(any(path.startswith(m.rstrip("/") + "/") for m in mounts),
             f"{path} (named in sessiond.toml) is in no mounted volume")

    # Pods: the Service, the PDB and the StatefulSet agree.
    labels = sts["spec"]["template"]["metadata"]["labels"]
    need(sts["spec"]["selector"]["matchLabels"].items() <= labels.items(),
         "the StatefulSet's selector does not match its own pods")
    need(svc["spec"].get("clusterIP") == "None", "the Service is not headless")
    need(sts["spec"].get("serviceName") == svc["metadata"]["name"],
         "the StatefulSet's serviceName is not the headless Service")
    need(svc["spec"].get("selector", {}).items() <= labels.items(),
         "the Service does not select the StatefulSet's pods")
    need(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(),
         "the PodDisruptionBudget does not select the StatefulSet's pods")
    need(pdb["spec"].get("maxUnavailable") == 1,
         "the PodDisruptionBudget does not keep disruptions to one pod at a time")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", t) for k in anti.values() for t in k]
    need(any(t.get("topologyKey") == "kubernetes.io/hostname"
             and t.get("labelSelector", {}).get("matchLabels", {}).items() <= labels.items()
             for t in terms),
         "no pod anti-affinity on kubernetes.io/hostname")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true",
                        help="print the files kustomization.yaml lists, then stop")
    parser.add_argument("--extract-config", metavar="FILE",
                        help="write the ConfigMap's sessiond.toml to FILE")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    try:
        files, by_kind = resources(args.directory)
        if args.list:
            print("\n".join(files))
            return 0
        problems = check(by_kind, args.extract_config)
    except (OSError, KeyError, ValueError, TypeError, yaml.YAMLError,
            tomllib.TOMLDecodeError) as error:
        print(f"k8s_policy: cannot read the manifests: {error!r}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print("policy: passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
