#!/usr/bin/env python3
"""Lint, render, validate and check the BitFleet Helm chart, offline.

    pip install -r Ops/helm/requirements.txt
    python3 Ops/helm/check_chart.py [-v] [--only NAME]

For every value set in Ops/helm/values/*.yaml:
  1. `helm lint --strict` through Helm's own Go SDK (helm-python-sdk; no helm binary, no cluster);
  2. render the chart (install and upgrade) with the same SDK;
  3. validate every rendered manifest against the Kubernetes OpenAPI schemas (kubernetes-validate,
     strict: unknown fields fail) for each version in KUBE_VERSIONS. KEDA's ScaledObject and
     TriggerAuthentication and the Prometheus Operator's ServiceMonitor are CRDs, absent from those
     schemas: they are validated structurally against the subsets of their CRD schemas defined below
     (required fields, types, no unknown fields in the parts the chart writes);
  4. assert the chart's promises on the rendered objects (security context, probes, drain timing,
     autoscaling, secret wiring, hooks, monitoring).
Then a set of values that must be refused (typos, contradictions, unpinned images) is rendered and
each must fail. Prints one line per failed check (every check with -v) and a closing
`N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

try:
    import helm_python as helm
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"missing dependency: {exc}. Run: pip install -r Ops/helm/requirements.txt", file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Ops" / "testing"))
from throwaway_pg import ClusterError, throwaway_cluster  # noqa: E402
CHART = ROOT / "Helm" / "bitfleet"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "fleet"
NAMESPACE = "bitfleet"
# The oldest minor the chart claims to support that kubernetes-validate still ships, and the newest it ships.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

# ---------------------------------------------------------------------------------------------
# Structural schemas for the CRDs (subsets of the upstream CRD openAPIV3Schema: the fields the
# chart writes, with the upstream types and enums; unknown fields are errors).
# ---------------------------------------------------------------------------------------------
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_HPA_RULES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "tolerance": {"type": ["string", "number"]},
        "policies": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "value", "periodSeconds"],
                "properties": {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
            },
        },
    },
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["failureThreshold", "replicas"],
                        "properties": {
                            "failureThreshold": {"type": "integer"},
                            "replicas": {"type": "integer"},
                            "behavior": {"type": "string"},
                        },
                    },
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "behavior": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES},
                                    },
                                },
                            },
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                # KEDA's trigger metadata is map[string]string: numbers must be quoted.
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                                "authenticationRef": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    },
                    "env": {"type": "array"},
                },
            },
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {
                        "type": "object",
                        "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                "scheme": {"enum": ["http", "https"]},
                            },
                        },
                    },
                },
            },
        },
    },
}

# Per-value-set expectations beyond what follows from the values themselves.
EXTRA_EXPECTATIONS: dict[str, dict[str, Any]] = {
    "default": {"kinds": {"Deployment", "ScaledObject", "TriggerAuthentication", "Secret", "Job", "PodDisruptionBudget", "Service", "ServiceAccount", "NetworkPolicy"},
                "absent": {"HorizontalPodAutoscaler", "ServiceMonitor", "ConfigMap"}},
    "keda-disabled-hpa": {"kinds": {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"},
                          "absent": {"ScaledObject", "TriggerAuthentication"}},
    "existing-secret-monitoring": {"kinds": {"ServiceMonitor", "ConfigMap", "ScaledObject"},
                                   "no_chart_secret": True},
    "scale-to-zero-digest": {"kinds": {"ScaledObject"}, "min_replicas": 0, "digest": True},
}

# Values that must make rendering fail (base values are merged under each).
BASE_OK = {"database": {"url": "postgresql://bitfleet_worker:pw@db:5432/bitfleet"},
           "migrations": {"database": {"url": "postgresql://bitfleet_owner:pw@db:5432/bitfleet"}}}
MUST_FAIL: list[tuple[str, dict[str, Any], str]] = [
    ("KEDA and the CPU HPA together", {"keda": {"enabled": True}, "hpa": {"enabled": True}}, "mutually exclusive"),
    ("misspelled top-level key (replicas)", {"replicas": 3}, "additional properties"),
    ("misspelled nested key (worker.gracePeriod)", {"worker": {"gracePeriod": 10}}, "additional properties"),
    ("unpinned image tag latest", {"image": {"tag": "latest"}}, ""),
    ("malformed digest", {"image": {"digest": "sha256:xyz"}}, ""),
    ("terminationGracePeriodSeconds not above preStop + worker grace",
     {"worker": {"gracePeriodSeconds": 30, "terminationGracePeriodSeconds": 35}}, "must exceed"),
    ("unknown models.source", {"models": {"source": "s3"}}, ""),
    ("PVC models without a claim", {"models": {"source": "persistentVolumeClaim"}}, "claimName"),
    ("KEDA min above max", {"keda": {"minReplicaCount": 5, "maxReplicaCount": 2}}, "must not exceed"),
    ("ServiceMonitor without the metrics Service", {"serviceMonitor": {"enabled": True}, "service": {"enabled": False}}, "service.enabled"),
]
MUST_FAIL_RAW: list[tuple[str, dict[str, Any], str]] = [
    ("no database URL and no existing Secret", {}, "database.existingSecret"),
    ("migrations without credentials of their own",
     {"database": {"url": "postgresql://bitfleet_worker:pw@db:5432/bitfleet"}}, "not with the worker's credentials"),
    ("migrations with the worker's URL",
     {"database": {"url": "postgresql://w@db/b"}, "migrations": {"database": {"url": "postgresql://w@db/b"}}},
     "is the worker's database.url"),
    ("migrations with the worker's existing Secret",
     {"database": {"existingSecret": "db"}, "migrations": {"database": {"existingSecret": "db"}}},
     "is the worker's database Secret"),
    ("networkPolicy.metricsFrom not a list",
     {"database": {"url": "postgresql://w@db/b"}, "migrations": {"enabled": False},
      "networkPolicy": {"metricsFrom": "everyone"}}, "metricsFrom"),
    ("both database.url and existingSecret",
     {"database": {"url": "postgresql://x@db/b", "existingSecret": "s"}}, "only one"),
]


# ---------------------------------------------------------------------------------------------
class Report:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.notes: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run fn; an exception counts as a failed check."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
            self.check(name, False, f"{type(exc).__name__}: {exc}")
            if self.verbose:
                traceback.print_exc()
            return None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__source", path)
                docs.append(doc)
    return docs


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__source"}


def kind_objs(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def hook_phases(doc: dict[str, Any]) -> set[str]:
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    return {p.strip() for p in str(ann.get("helm.sh/hook", "")).split(",") if p.strip()}


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def seconds(value: Any) -> int:
    return int(str(value))


# ---------------------------------------------------------------------------------------------
def validate_manifests(rep: Report, label: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kind = doc.get("kind", "?")
        name = (doc.get("metadata") or {}).get("name", "?")
        obj = strip(doc)
        if (doc.get("apiVersion"), kind) in CRD_KINDS:
            errors = sorted(jsonschema.Draft7Validator(CRD_SCHEMAS[kind]).iter_errors(obj), key=str)
            rep.check(f"{label}: {kind}/{name} structurally valid (CRD subset schema)", not errors,
                      "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]))
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                rep.check(f"{label}: {kind}/{name} valid for Kubernetes {version} (strict)", True)
            except kubernetes_validate.ValidationError as exc:
                rep.check(f"{label}: {kind}/{name} valid for Kubernetes {version} (strict)", False,
                          f"{list(exc.absolute_path)}: {exc.message}")
            except Exception as exc:  # noqa: BLE001 - e.g. SchemaNotFoundError for an unknown kind
                rep.check(f"{label}: {kind}/{name} valid for Kubernetes {version} (strict)", False,
                          f"{type(exc).__name__}: {exc}")


def check_labels(rep: Report, label: str, docs: list[dict[str, Any]]) -> None:
    required = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                "app.kubernetes.io/version", "helm.sh/chart"]
    for doc in docs:
        labels = (doc.get("metadata") or {}).get("labels") or {}
        missing = [k for k in required if k not in labels]
        rep.check(f"{label}: {doc['kind']}/{doc['metadata']['name']} has the standard labels", not missing,
                  f"missing {missing}")
        rep.check(f"{label}: {doc['kind']}/{doc['metadata']['name']} in release namespace",
                  (doc.get("metadata") or {}).get("namespace") == NAMESPACE)


def check_container_security(rep: Report, where: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    psc = pod.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
    rep.check(f"{where}: runAsNonRoot", csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True)
    rep.check(f"{where}: runAsUser is set and not 0", run_as_user not in (None, 0), f"runAsUser={run_as_user}")
    rep.check(f"{where}: readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
    rep.check(f"{where}: allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
    rep.check(f"{where}: not privileged", csc.get("privileged", False) is False)
    caps = csc.get("capabilities") or {}
    rep.check(f"{where}: capabilities drop ALL, add none", "ALL" in (caps.get("drop") or []) and not caps.get("add"),
              f"capabilities={caps}")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    rep.check(f"{where}: seccompProfile RuntimeDefault", seccomp == "RuntimeDefault", f"seccomp={seccomp}")
    rep.check(f"{where}: no service account token", pod.get("automountServiceAccountToken") is False)
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts") or []}
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    tmp = mounts.get("/tmp")
    rep.check(f"{where}: /tmp is an emptyDir", bool(tmp) and "emptyDir" in vols.get(tmp["name"], {}))
    res = container.get("resources") or {}
    rep.check(f"{where}: resources request cpu and memory and limit memory",
              {"cpu", "memory"} <= set((res.get("requests") or {})) and "memory" in (res.get("limits") or {}),
              f"resources={res}")


def secret_key_available(docs: list[dict[str, Any]], name: str, key: str, external: set[str],
                         need_hook: set[str] | None = None) -> tuple[bool, str]:
    """A secretKeyRef resolves to a rendered Secret holding the key, or to a declared external Secret."""
    if name in external:
        return True, "external"
    for s in kind_objs(docs, "Secret"):
        if s["metadata"]["name"] != name:
            continue
        data = {**(s.get("data") or {}), **(s.get("stringData") or {})}
        if key not in data:
            return False, f"Secret {name} has no key {key}"
        if need_hook is not None and not need_hook <= hook_phases(s):
            return False, f"Secret {name} is not a {sorted(need_hook)} hook (it would not exist when the hook Job runs)"
        if need_hook is None and hook_phases(s):
            return False, f"Secret {name} is a hook resource, not a release object"
        raw = (s.get("data") or {}).get(key)
        if raw is not None:
            try:
                url = base64.b64decode(raw).decode()
            except Exception:  # noqa: BLE001
                return False, f"Secret {name}/{key} is not base64"
            if not re.match(r"^postgres(ql)?://", url):
                return False, f"Secret {name}/{key} is not a postgresql:// URL"
        return True, "rendered"
    return False, f"no Secret named {name}"


def check_value_set(rep: Report, path: Path) -> None:
    label = path.stem
    print(f"== value set {label} ({path.relative_to(ROOT)})")
    values = yaml.safe_load(path.read_text()) or {}
    expect = EXTRA_EXPECTATIONS.get(label, {})

    # 1. lint
    for kube in KUBE_VERSIONS:
        report = rep.run(f"{label}: lint", lambda: helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                                                             kube_version=f"v{kube}"))
        if report is not None:
            bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + \
                  [{"error": e} for e in report.get("errors", [])]
            rep.check(f"{label}: helm lint --strict (kube v{kube}) has no warnings or errors", not bad,
                      "; ".join(str(m.get("error")).strip() for m in bad))

    with helm.Chart.load(str(CHART)) as chart:
        rep.run(f"{label}: values.schema.json accepts the value set", lambda: chart.validate_schema(values))
        merged = chart.merge_values(values)
        rendered = rep.run(f"{label}: render (install)",
                           lambda: chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))
        upgraded = rep.run(f"{label}: render (upgrade)",
                           lambda: chart.render(values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True, revision=2))
    if rendered is None:
        return
    docs = rep.run(f"{label}: rendered YAML parses", lambda: parse_manifests(rendered))
    if docs is None:
        return
    if upgraded is not None:
        rep.check(f"{label}: install and upgrade render the same objects",
                  sorted((d["kind"], d["metadata"]["name"]) for d in parse_manifests(upgraded))
                  == sorted((d["kind"], d["metadata"]["name"]) for d in docs))
    notes = next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")
    rep.check(f"{label}: NOTES.txt renders", "bitfleet" in notes.lower())

    kinds = {d["kind"] for d in docs}
    rep.check(f"{label}: renders {sorted(expect.get('kinds', set()))}", expect.get("kinds", set()) <= kinds,
              f"rendered kinds {sorted(kinds)}")
    rep.check(f"{label}: does not render {sorted(expect.get('absent', set()))}",
              not (expect.get("absent", set()) & kinds), f"rendered kinds {sorted(kinds)}")
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    rep.check(f"{label}: object names unique", len(names) == len(set(names)), str(names))

    # 2+3. schemas
    validate_manifests(rep, label, docs)
    check_labels(rep, label, docs)

    keda_on = merged["keda"]["enabled"]
    hpa_on = merged["hpa"]["enabled"]
    external_secrets = {s for s in [merged["database"]["existingSecret"], merged["migrations"]["database"]["existingSecret"],
                                    merged["keda"]["connectionSecret"]["name"]] if s}

    # 4. the worker Deployment
    deps = kind_objs(docs, "Deployment")
    if not rep.check(f"{label}: exactly one worker Deployment", len(deps) == 1, f"{len(deps)} found"):
        return
    dep = deps[0]
    dep_name = dep["metadata"]["name"]
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    rep.check(f"{label}: Deployment selector matches pod labels", matches(dep["spec"]["selector"]["matchLabels"], pod_labels))
    rep.check(f"{label}: selector excludes version labels (stable across upgrades)",
              not {"app.kubernetes.io/version", "helm.sh/chart"} & set(dep["spec"]["selector"]["matchLabels"]))
    workers = [c for c in pod["containers"] if c["name"] == "worker"]
    if not rep.check(f"{label}: worker container present", len(workers) == 1):
        return
    w = workers[0]
    check_container_security(rep, f"{label}: worker", pod, w)
    cmd = (w.get("command") or []) + (w.get("args") or [])
    rep.check(f"{label}: runs `bitfleet worker`", cmd[:2] == ["/usr/local/bin/bitfleet", "worker"], str(cmd))

    image = w["image"]
    rep.check(f"{label}: image pinned by a tag (not latest)",
              re.match(r"^[^@]+:(?!latest(@|$))[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$", image) is not None, image)
    if merged["image"]["digest"] or expect.get("digest"):
        rep.check(f"{label}: image pinned by digest", image.endswith("@" + merged["image"]["digest"]) and "@sha256:" in image, image)

    env = env_map(w)
    db = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
    if rep.check(f"{label}: DATABASE_URL comes from a Secret", bool(db), str(env.get("DATABASE_URL"))):
        ok, why = secret_key_available(docs, db["name"], db["key"], external_secrets)
        rep.check(f"{label}: worker Secret {db['name']}/{db['key']} exists as a release object or existingSecret", ok, why)
        if merged["database"]["existingSecret"]:
            rep.check(f"{label}: worker uses database.existingSecret", db["name"] == merged["database"]["existingSecret"]
                      and db["key"] == merged["database"]["existingSecretKey"], str(db))
    if expect.get("no_chart_secret"):
        rep.check(f"{label}: no database Secret rendered with existingSecret",
                  not [s for s in kind_objs(docs, "Secret") if not hook_phases(s)])
    rep.check(f"{label}: no plain-text database URL in the Deployment", "postgres" not in json.dumps(strip(dep)).lower()
              or all("postgres" not in json.dumps(e).lower() for e in w.get("env") or []))

    port = int(env["BITFLEET_HEALTH_PORT"]["value"]) if "BITFLEET_HEALTH_PORT" in env else 8080
    named_ports = {p["name"]: p["containerPort"] for p in w.get("ports") or []}

    def probe_ok(probe: dict[str, Any] | None, path: str) -> tuple[bool, str]:
        if not probe or "httpGet" not in probe:
            return False, "missing"
        g = probe["httpGet"]
        p = named_ports.get(g["port"], g["port"]) if isinstance(g["port"], str) else g["port"]
        return g.get("path") == path and p == port, f"{g} -> port {p}, health port {port}"

    ok, why = probe_ok(w.get("livenessProbe"), "/healthz")
    rep.check(f"{label}: liveness probe GET /healthz on the health port", ok, why)
    ok, why = probe_ok(w.get("readinessProbe"), "/readyz")
    rep.check(f"{label}: readiness probe GET /readyz on the health port", ok, why)

    grace = int(env["BITFLEET_GRACE_PERIOD"]["value"]) if "BITFLEET_GRACE_PERIOD" in env else 30
    pre = ((w.get("lifecycle") or {}).get("preStop")) or {}
    pre_sleep = 0
    if "exec" in pre:
        c = pre["exec"]["command"]
        if c and c[0].endswith("sleep") and len(c) == 2:
            pre_sleep = seconds(c[1])
    elif "sleep" in pre:
        pre_sleep = seconds(pre["sleep"]["seconds"])
    if merged["worker"]["preStop"]["enabled"]:
        rep.check(f"{label}: preStop hook delays SIGTERM so the worker drains after endpoints update", pre_sleep > 0, str(pre))
        rep.check(f"{label}: preStop sleep matches values", pre_sleep == merged["worker"]["preStop"]["sleepSeconds"])
    else:
        rep.check(f"{label}: no preStop hook when disabled", not pre, str(pre))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    rep.check(f"{label}: terminationGracePeriodSeconds ({tgps}) > preStop ({pre_sleep}) + worker grace ({grace})",
              tgps > pre_sleep + grace)
    rep.check(f"{label}: worker grace period matches values", grace == merged["worker"]["gracePeriodSeconds"])

    model_dir = env.get("BITFLEET_MODEL_DIR", {}).get("value")
    rep.check(f"{label}: BITFLEET_MODEL_DIR set", model_dir == merged["models"]["mountPath"], str(model_dir))
    mounts = {m["mountPath"]: m for m in w.get("volumeMounts") or []}
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    src = merged["models"]["source"]
    if src == "image":
        rep.check(f"{label}: image-baked models: nothing mounted over the model dir", model_dir not in mounts)
    else:
        m = mounts.get(model_dir)
        want = {"persistentVolumeClaim": "persistentVolumeClaim", "hostPath": "hostPath"}[src]
        rep.check(f"{label}: model dir mounted read-only from {want}",
                  bool(m) and m.get("readOnly") is True and want in vols.get(m["name"], {}), str(m))
    if merged["worker"]["pollOnly"]:
        # The worker reads BITFLEET_POLL_ONLY == "1" (Sources/bitfleet/WorkerCommand.swift).
        rep.check(f"{label}: BITFLEET_POLL_ONLY=1", env.get("BITFLEET_POLL_ONLY", {}).get("value") == "1")
    if merged["worker"]["allowNetworks"]:
        rep.check(f"{label}: BITFLEET_ALLOW_NETWORKS carries the allowlist",
                  env.get("BITFLEET_ALLOW_NETWORKS", {}).get("value") == ",".join(merged["worker"]["allowNetworks"]))

    # autoscaling
    scaled = kind_objs(docs, "ScaledObject")
    hpas = kind_objs(docs, "HorizontalPodAutoscaler")
    rep.check(f"{label}: never both a ScaledObject and the chart's HPA", not (scaled and hpas))
    if keda_on or hpa_on:
        rep.check(f"{label}: replicas left to the autoscaler", "replicas" not in dep["spec"])
    else:
        rep.check(f"{label}: fixed replicas when no autoscaler", dep["spec"].get("replicas") == merged["replicaCount"])
    if keda_on:
        rep.check(f"{label}: KEDA on -> one ScaledObject, no HPA", len(scaled) == 1 and not hpas)
        if scaled:
            so = scaled[0]["spec"]
            rep.check(f"{label}: ScaledObject targets the worker Deployment",
                      so["scaleTargetRef"]["name"] == dep_name and so["scaleTargetRef"].get("kind", "Deployment") == "Deployment")
            rep.check(f"{label}: maxReplicaCount >= minReplicaCount >= 0",
                      0 <= so.get("minReplicaCount", 0) <= so.get("maxReplicaCount", 100))
            if "min_replicas" in expect:
                rep.check(f"{label}: scale to zero (minReplicaCount {expect['min_replicas']})",
                          so.get("minReplicaCount") == expect["min_replicas"], str(so.get("minReplicaCount")))
            down = (((so.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}).get("scaleDown") or {}
            rep.check(f"{label}: scale-down stabilisation window set", down.get("stabilizationWindowSeconds", 0) >= 60, str(down))
            pg = [t for t in so["triggers"] if t["type"] == "postgresql"]
            if rep.check(f"{label}: postgresql trigger", len(pg) == 1):
                t = pg[0]
                q = re.sub(r"\s+", " ", t["metadata"].get("query", "")).lower()
                if "bitfleet.queue_load()" in q:
                    # The default calls the schema's function (owner's rights, partial indexes): check its body.
                    body = re.search(r"create function bitfleet\.queue_load\(\).*?\$\$(.*?)\$\$", "\n".join(
                        m.read_text() for m in sorted((ROOT / "Migrations").glob("*.sql"))), re.S | re.I)
                    q = re.sub(r"\s+", " ", body.group(1) if body else "").lower()
                rep.check(f"{label}: KEDA query reads bitfleet.jobs", "from bitfleet.jobs" in q, q)
                rep.check(f"{label}: KEDA query counts running jobs",
                          re.search(r"state\s*=\s*'running'|state in \([^)]*'running'", q) is not None, q)
                rep.check(f"{label}: KEDA query counts queued and retrying jobs that are due",
                          "'queued'" in q and "'failed'" in q and "run_after <= now()" in q, q)
                rep.check(f"{label}: KEDA query is a count", q.startswith("select count(*)") or "count(" in q, q)
                rep.check(f"{label}: no connection string in trigger metadata",
                          not {"connection", "connectionFromEnv", "password"} & set(t["metadata"]))
                rep.check(f"{label}: targetQueryValue > 0", float(t["metadata"].get("targetQueryValue", "0")) > 0)
                rep.check(f"{label}: metricType AverageValue (work per replica)", t.get("metricType") == "AverageValue")
                auth = (t.get("authenticationRef") or {}).get("name")
                tas = [a for a in kind_objs(docs, "TriggerAuthentication") if a["metadata"]["name"] == auth]
                if rep.check(f"{label}: trigger uses a rendered TriggerAuthentication", len(tas) == 1, str(auth)):
                    refs = [r for r in tas[0]["spec"].get("secretTargetRef", []) if r["parameter"] == "connection"]
                    if rep.check(f"{label}: TriggerAuthentication maps the Secret to parameter 'connection'", len(refs) == 1):
                        ok, why = secret_key_available(docs, refs[0]["name"], refs[0]["key"], external_secrets)
                        rep.check(f"{label}: KEDA connection Secret {refs[0]['name']}/{refs[0]['key']} exists", ok, why)
                        if merged["keda"]["connectionSecret"]["name"]:
                            rep.check(f"{label}: KEDA uses keda.connectionSecret",
                                      refs[0]["name"] == merged["keda"]["connectionSecret"]["name"])
    elif hpa_on:
        if rep.check(f"{label}: KEDA off + hpa on -> one HPA", len(hpas) == 1 and not scaled):
            h = hpas[0]["spec"]
            rep.check(f"{label}: HPA targets the worker Deployment", h["scaleTargetRef"]["name"] == dep_name)
            rep.check(f"{label}: HPA scales on CPU utilisation",
                      any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                          and m["resource"]["target"]["type"] == "Utilization" for m in h["metrics"]))
            rep.check(f"{label}: HPA scale-down stabilisation window set",
                      ((h.get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds", 0) >= 60)
            rep.check(f"{label}: worker requests CPU (HPA utilisation base)",
                      "cpu" in (w.get("resources") or {}).get("requests", {}))
    else:
        rep.check(f"{label}: no autoscaler objects", not scaled and not hpas)

    # PDB
    pdbs = kind_objs(docs, "PodDisruptionBudget")
    if merged["podDisruptionBudget"]["enabled"]:
        rep.check(f"{label}: PodDisruptionBudget selects the workers",
                  len(pdbs) == 1 and matches(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels))

    # Service / ServiceMonitor
    svcs = kind_objs(docs, "Service")
    if merged["service"]["enabled"]:
        if rep.check(f"{label}: metrics Service", len(svcs) == 1):
            s = svcs[0]
            rep.check(f"{label}: Service selects the workers", matches(s["spec"]["selector"], pod_labels))
            rep.check(f"{label}: Service targets the health/metrics port",
                      all(named_ports.get(p["targetPort"], p["targetPort"]) == port for p in s["spec"]["ports"]))
    mons = kind_objs(docs, "ServiceMonitor")
    if merged["serviceMonitor"]["enabled"]:
        if rep.check(f"{label}: ServiceMonitor rendered", len(mons) == 1 and len(svcs) == 1):
            sm = mons[0]["spec"]
            rep.check(f"{label}: ServiceMonitor selects the metrics Service",
                      matches(sm["selector"]["matchLabels"], svcs[0]["metadata"]["labels"]))
            rep.check(f"{label}: ServiceMonitor scrapes /metrics on the Service port",
                      all(e.get("path") == "/metrics" and e.get("port") in {p["name"] for p in svcs[0]["spec"]["ports"]}
                          for e in sm["endpoints"]))
            for k, v in merged["serviceMonitor"]["labels"].items():
                rep.check(f"{label}: ServiceMonitor label {k}", mons[0]["metadata"]["labels"].get(k) == v)
    else:
        rep.check(f"{label}: no ServiceMonitor unless enabled", not mons)

    # dashboards
    cms = kind_objs(docs, "ConfigMap")
    if merged["grafanaDashboards"]["enabled"]:
        if rep.check(f"{label}: dashboards ConfigMap rendered", len(cms) == 1):
            cm = cms[0]
            rep.check(f"{label}: dashboards ConfigMap labelled grafana_dashboard=\"1\"",
                      cm["metadata"]["labels"].get(merged["grafanaDashboards"]["label"]) == "1")
            shipped = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
            rep.check(f"{label}: every dashboards/*.json is in the ConfigMap", sorted(cm["data"]) == shipped,
                      f"{sorted(cm['data'])} vs {shipped}")
            for fname, text in cm["data"].items():
                d = rep.run(f"{label}: {fname} is JSON", lambda: json.loads(text))
                if d is None:
                    continue
                sqls = [t.get("rawSql", "") for p in d.get("panels", []) for t in p.get("targets", [])]
                rep.check(f"{label}: {fname} has a title, uid and SQL panels",
                          bool(d.get("title")) and bool(d.get("uid")) and bool(sqls) and all(sqls))
                rep.check(f"{label}: {fname} queries only the bitfleet schema",
                          all(re.search(r"\bbitfleet\.", s) for s in sqls))
                rep.check(f"{label}: {fname} has no placeholders",
                          not re.search(r"TODO|FIXME|PLACEHOLDER|XXX|lorem", text, re.I))
    else:
        rep.check(f"{label}: no dashboards ConfigMap unless enabled", not cms)

    # migrations hook Job
    jobs = kind_objs(docs, "Job")
    if merged["migrations"]["enabled"]:
        if rep.check(f"{label}: migrations Job rendered", len(jobs) == 1):
            job = jobs[0]
            ann = job["metadata"].get("annotations") or {}
            rep.check(f"{label}: migrations Job is a pre-install,pre-upgrade hook",
                      {"pre-install", "pre-upgrade"} <= hook_phases(job), str(ann.get("helm.sh/hook")))
            rep.check(f"{label}: migrations Job has a hook-delete-policy",
                      "before-hook-creation" in ann.get("helm.sh/hook-delete-policy", ""), str(ann))
            jpod = job["spec"]["template"]["spec"]
            jc = jpod["containers"][0]
            rep.check(f"{label}: migrations Job never restarts in place", jpod.get("restartPolicy") == "Never")
            jcmd = (jc.get("command") or []) + (jc.get("args") or [])
            rep.check(f"{label}: migrations Job runs `bitfleet migrate` (URL from the environment, not an argument)",
                      jcmd == ["/usr/local/bin/bitfleet", "migrate"], str(jcmd))
            rep.check(f"{label}: migrations Job uses the worker image", jc["image"] == image)
            check_container_security(rep, f"{label}: migrate", jpod, jc)
            ref = env_map(jc).get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
            if rep.check(f"{label}: migrations DATABASE_URL from a Secret", bool(ref)):
                ok, why = secret_key_available(docs, ref["name"], ref["key"], external_secrets,
                                               need_hook={"pre-install", "pre-upgrade"})
                rep.check(f"{label}: migrations Secret exists before the hook runs", ok, why)
                hook_secrets = [s for s in kind_objs(docs, "Secret") if s["metadata"]["name"] == ref["name"] and hook_phases(s)]
                if hook_secrets:
                    sw = int(hook_secrets[0]["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
                    jw = int(ann.get("helm.sh/hook-weight", "0"))
                    rep.check(f"{label}: hook Secret weight ({sw}) < Job weight ({jw})", sw < jw)
                    rep.check(f"{label}: hook Secret deleted after success",
                              "hook-succeeded" in hook_secrets[0]["metadata"]["annotations"].get("helm.sh/hook-delete-policy", ""))
            rep.check(f"{label}: migrations use their own credentials (the schema owner's, not the worker's)",
                      bool(ref) and db is not None and (ref["name"], ref["key"]) != (db["name"], db["key"]))
    else:
        rep.check(f"{label}: no migrations Job when disabled", not jobs)
    non_hook_jobs = [j for j in jobs if not hook_phases(j)]
    rep.check(f"{label}: no Job outside hooks", not non_hook_jobs)

    # no database URL in any process's arguments (visible to every process on the node)
    for d in docs:
        spec = (d.get("spec") or {}).get("template", {}).get("spec") or {}
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            argv = " ".join((c.get("command") or []) + (c.get("args") or []))
            rep.check(f"{label}: {d['kind']}/{d['metadata']['name']} container {c['name']} has no database URL in its arguments",
                      not re.search(r"postgres(ql)?://|DATABASE_URL|--database-url", argv), argv)

    # NetworkPolicy: only the health port, only from networkPolicy.metricsFrom
    nps = kind_objs(docs, "NetworkPolicy")
    if merged["networkPolicy"]["enabled"]:
        if rep.check(f"{label}: NetworkPolicy rendered", len(nps) == 1):
            np = nps[0]["spec"]
            rep.check(f"{label}: NetworkPolicy selects the worker pods", matches(np["podSelector"]["matchLabels"], pod_labels))
            rep.check(f"{label}: NetworkPolicy restricts ingress", "Ingress" in np.get("policyTypes", []))
            rules = np.get("ingress") or []
            peers = merged["networkPolicy"]["metricsFrom"]
            if peers:
                rep.check(f"{label}: NetworkPolicy opens only the health port to metricsFrom",
                          len(rules) == 1 and rules[0].get("from") == peers
                          and rules[0].get("ports") == [{"protocol": "TCP", "port": port}], str(rules))
            else:
                rep.check(f"{label}: NetworkPolicy without metricsFrom admits no pod", rules == [], str(rules))
    else:
        rep.check(f"{label}: no NetworkPolicy when disabled", not nps)


def check_long_names(rep: Report) -> None:
    """Helm allows 53-character release names; every object name must still be a valid DNS label/subdomain."""
    print("== longest release name (53 characters)")
    long_release = ("fleet-" + "x" * 60)[:53]
    values = deep_merge(BASE_OK, {"serviceMonitor": {"enabled": True}, "grafanaDashboards": {"enabled": True}})
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=long_release, namespace=NAMESPACE, is_install=True)
    for doc in parse_manifests(rendered):
        name = doc["metadata"]["name"]
        rep.check(f"long release: {doc['kind']} name {name!r} is a DNS label (<= 63)",
                  len(name) <= 63 and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) is not None)
        for k, v in (doc["metadata"].get("labels") or {}).items():
            rep.check(f"long release: {doc['kind']}/{name} label {k} value <= 63", len(str(v)) <= 63, str(v))


def check_must_fail(rep: Report) -> None:
    print("== values that must be refused")
    with helm.Chart.load(str(CHART)) as chart:
        cases = [(n, deep_merge(BASE_OK, v), m) for n, v, m in MUST_FAIL] + MUST_FAIL_RAW
        for name, values, needle in cases:
            try:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as exc:
                msg = str(exc)
                rep.check(f"refused: {name}", needle.lower() in msg.lower(), f"refused, but message lacks {needle!r}: {msg[:200]}")
                continue
            rep.check(f"refused: {name}", False, "rendered without error")


# ---------------------------------------------------------------------------------------------
# The SQL the chart ships (KEDA's query, the dashboards' queries) against the real schema.
# Needs a PostgreSQL server (apt postgresql-15, as Ops/setup.sh installs); skipped with a note otherwise.
# ---------------------------------------------------------------------------------------------
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# (state, run_after offset) -> rows; KEDA must count running + due queued + due failed = 3 + 2 + 1 = 6.
JOB_FIXTURE = [("queued", "-1 minute", 2), ("queued", "+1 hour", 1), ("failed", "-1 second", 1),
               ("failed", "+10 minutes", 1), ("running", "-5 minutes", 3), ("succeeded", "-1 hour", 4),
               ("dead", "-1 hour", 1), ("cancelled", "-1 hour", 1)]
KEDA_EXPECTED = 6


def grafana_macros(sql: str) -> str:
    """Expand the Grafana PostgreSQL macros the dashboards use, as Grafana does (literal time bounds)."""
    return re.sub(r"\$__timeFilter\(([^)]+)\)",
                  r"\1 BETWEEN (now() - interval '30 days') AND now() + interval '1 day'", sql)


def check_sql(rep: Report) -> None:
    print("== chart SQL against the schema in Migrations/ (throwaway PostgreSQL)")
    pg_sh = ROOT / "Ops" / "pg.sh"
    migrations = sorted((ROOT / "Migrations").glob("*.sql"))
    psql = shutil.which("psql") or str(PG_BIN / "psql")
    if not (PG_BIN / "initdb").exists() or not pg_sh.exists() or not migrations or not Path(psql).exists():
        rep.notes.append(f"SQL checks skipped: no PostgreSQL server at {PG_BIN} (apt-get install postgresql-15), "
                         "Ops/pg.sh or Migrations/*.sql missing")
        print("  skip  " + rep.notes[-1])
        return
    try:
        with throwaway_cluster("bitfleet-chart-pg-") as url:
            check_sql_on(rep, url, psql, migrations)
    except ClusterError as exc:
        rep.check("sql: throwaway PostgreSQL", False, str(exc))


def check_sql_on(rep: Report, url: str, psql: str, migrations: list[Path]) -> None:
    try:
        def sql(statement: str, role: str | None = None) -> str:
            if role:
                statement = f"SET ROLE {role};\n{statement}"
            out = subprocess.run([psql, url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip())
            return out.stdout.strip()

        # What `bitfleet migrate` does before the files (Sources/BitFleetPostgres/Migrator.swift).
        sql("CREATE SCHEMA IF NOT EXISTS bitfleet; CREATE TABLE IF NOT EXISTS bitfleet.schema_migrations "
            "(name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());")

        def apply(m: Path) -> bool:
            out = subprocess.run([psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(m)],
                                 capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip()[-400:])
            return True

        for m in migrations:
            if rep.run(f"sql: apply {m.name}", lambda: apply(m)) is None:
                return
        inserts = []
        for state, offset, n in JOB_FIXTURE:
            lease = "'w1', now() + interval '1 minute'" if state == "running" else "NULL, NULL"
            inserts.append(
                "INSERT INTO bitfleet.jobs (model, input_url, state, run_after, lease_owner, lease_expires_at) "
                f"SELECT 'demo', 'http://127.0.0.1/x.npy', '{state}', now() + interval '{offset}', {lease} "
                f"FROM generate_series(1, {n});")
        inserts.append(
            "INSERT INTO bitfleet.job_costs (job_id, attempt, model, model_version, worker_id, node_class, samples, "
            "queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched, binary_ops, "
            "price_per_core_hour, euros) SELECT id, 1, 'demo', '1', 'w1', 'test', 100, 0, 0, 0, 1, 36, 1000, 1000000, "
            "0.1, 0.001 FROM bitfleet.jobs WHERE state = 'succeeded';")
        if rep.run("sql: insert the job fixture", lambda: sql("\n".join(inserts))) is None:
            return
        roles = set(sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bitfleet%'").split())
        readonly = "bitfleet_readonly" if "bitfleet_readonly" in roles else None
        if not readonly:
            rep.notes.append("role bitfleet_readonly not created by Migrations/ yet: chart SQL ran as the superuser only")
            print("  note  " + rep.notes[-1])

        with helm.Chart.load(str(CHART)) as chart:
            queries = {"chart default": chart.values["keda"]["query"]}
        for path in sorted(VALUES_DIR.glob("*.yaml")):
            q = ((yaml.safe_load(path.read_text()) or {}).get("keda") or {}).get("query")
            if q:
                queries[path.stem] = q
        for where, q in queries.items():
            for role in [None, readonly] if readonly else [None]:
                who = role or "superuser"
                got = rep.run(f"sql: KEDA query ({where}) runs as {who}", lambda: sql(q, role))
                if got is not None:
                    rep.check(f"sql: KEDA query ({where}) as {who} returns one integer = running + due queued/failed "
                              f"({KEDA_EXPECTED})", got == str(KEDA_EXPECTED), f"got {got!r}")

        for dash in sorted((CHART / "dashboards").glob("*.json")):
            d = json.loads(dash.read_text())
            for panel in d.get("panels", []):
                for t in panel.get("targets", []):
                    raw = t.get("rawSql")
                    if not raw:
                        continue
                    for role in [None, readonly] if readonly else [None]:
                        who = role or "superuser"
                        got = rep.run(f"sql: {dash.name} panel '{panel['title']}' runs as {who}",
                                      lambda: sql(grafana_macros(raw), role))
                        if got is not None:
                            rep.check(f"sql: {dash.name} panel '{panel['title']}' returns rows as {who}", got != "",
                                      "no rows")
        euros = rep.run("sql: cost panel total", lambda: sql(grafana_macros(
            "SELECT round(coalesce(sum(euros), 0)::numeric, 6) FROM bitfleet.cost_by_model_day WHERE $__timeFilter(day)")))
        if euros is not None:
            rep.check("sql: cost_by_model_day sums the fixture's euros (4 x 0.001)", float(euros) == 0.004, euros)
    except Exception as exc:  # noqa: BLE001
        rep.check("sql: throwaway PostgreSQL", False, f"{type(exc).__name__}: {exc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check, not only failures")
    ap.add_argument("--only", help="check only the value set with this name (file stem)")
    ap.add_argument("--no-sql", action="store_true", help="skip running the chart's SQL against a throwaway PostgreSQL")
    args = ap.parse_args()
    rep = Report(args.verbose)
    print(f"chart {CHART.relative_to(ROOT)}; Helm SDK {helm.helm_sdk_version()}; "
          f"kubernetes-validate {kubernetes_validate.__version__}; Kubernetes schemas {', '.join(KUBE_VERSIONS)}")
    print("note: ScaledObject, TriggerAuthentication and ServiceMonitor are CRDs, not in the Kubernetes schemas; "
          "they are validated against the structural subset schemas in this script.")
    sets = sorted(VALUES_DIR.glob("*.yaml"))
    if args.only:
        sets = [p for p in sets if p.stem == args.only]
    rep.check("at least 4 value sets", len(sets) >= 4 or bool(args.only), f"{len(sets)} found in {VALUES_DIR}")
    for stem in EXTRA_EXPECTATIONS:
        if not args.only:
            rep.check(f"value set {stem}.yaml present", (VALUES_DIR / f"{stem}.yaml").exists())
    for path in sets:
        rep.run(f"{path.stem}: checks ran", lambda: check_value_set(rep, path))
    if not args.only:
        rep.run("must-fail checks ran", lambda: check_must_fail(rep))
        rep.run("long-name checks ran", lambda: check_long_names(rep))
    if not args.only and not args.no_sql:
        check_sql(rep)
    for note in rep.notes:
        print(f"note: {note}")
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
