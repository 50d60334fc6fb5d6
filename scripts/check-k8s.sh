#!/usr/bin/env bash
# Checks the Kubernetes manifests offline (no cluster needed): renders the kustomization with
# `kubectl kustomize`, validates every rendered object against the Kubernetes API schema in strict
# mode (kubernetes-validate: unknown or misspelled fields are errors), then checks what a schema
# cannot see: the objects are all there, selectors match their pods, names that objects refer to
# exist, every container is locked down, and the Dockerfile builds with Cargo.toml's rust-version.
#
#   scripts/check-k8s.sh [DIR]        DIR: a kustomization folder (default deploy/kubernetes)
#
# Installs what it lacks (as root on Debian): kubectl from the kubernetes-client package (1.20 on
# bookworm; its old kustomize renders these manifests the same as a current kubectl), and a venv
# with kubernetes-validate in MILLRACE_K8S_VENV (default ~/.cache/millrace-k8s-venv, outside the
# repo and kept between runs, so pip downloads once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-deploy/kubernetes}
# The Kubernetes API version whose schema the objects must satisfy (kubernetes-validate ships
# 1.25 to 1.37); MILLRACE_K8S_VERSIONS may list several.
versions=${MILLRACE_K8S_VERSIONS:-1.30.0}
validator_version=1.37.0
venv=${MILLRACE_K8S_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/millrace-k8s-venv}

fail() { echo "check-k8s: $*" >&2; exit 1; }
as_root_apt() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[ -f "$dir/kustomization.yaml" ] || fail "no kustomization.yaml in $dir"

if ! command -v kubectl >/dev/null 2>&1; then
  echo "check-k8s: kubectl not found; installing Debian's kubernetes-client" >&2
  as_root_apt kubernetes-client || true
  command -v kubectl >/dev/null 2>&1 \
    || fail "kubectl is required: apt-get install kubernetes-client (as root), or any kubectl >= 1.20 on PATH"
fi

if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$validator_version" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    as_root_apt python3 python3-venv || true
  fi
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || fail "python3 with venv is required: apt-get install python3-venv (as root)"
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "cannot create a venv in $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$validator_version" \
    || fail "pip install kubernetes-validate==$validator_version failed (no PyPI?)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rendered=$tmp/rendered.yaml

echo "check-k8s: $(kubectl version --client 2>/dev/null | head -n 1)"
# A current kubectl warns that commonLabels is deprecated; kubectl 1.20 does not know `labels`.
kubectl kustomize "$dir" > "$rendered" 2> "$tmp/kustomize.err" \
  || { grep -v "'commonLabels' is deprecated" "$tmp/kustomize.err" >&2; fail "kubectl kustomize $dir failed"; }
grep -v "'commonLabels' is deprecated" "$tmp/kustomize.err" >&2 || true

for v in $versions; do
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$v" "$rendered" \
    || fail "the manifests rendered from $dir are not valid Kubernetes $v objects (strict)"
done

"$venv/bin/python" - "$rendered" "$dir" <<'EOF' || fail "the manifests rendered from $dir are not consistent"
import re, sys, yaml

rendered, folder = sys.argv[1], sys.argv[2]
objs = [o for o in yaml.safe_load_all(open(rendered)) if o]
by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
errors = []

expected = {("Deployment", "millrace-coordinator"), ("Service", "millrace-coordinator"),
            ("PersistentVolumeClaim", "millrace-state"), ("StatefulSet", "millrace-worker"),
            ("Service", "millrace-workers"), ("PersistentVolumeClaim", "millrace-data")}
if set(by) != expected:
    errors.append(f"objects: missing {sorted(expected - set(by))}, unexpected {sorted(set(by) - expected)}")

def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

pods = {name: o["spec"]["template"] for (kind, name), o in by.items() if kind in ("Deployment", "StatefulSet")}
for name, tpl in pods.items():
    o = by.get(("Deployment", name)) or by[("StatefulSet", name)]
    labels = tpl["metadata"].get("labels", {})
    if not selects(o["spec"]["selector"].get("matchLabels"), labels):
        errors.append(f"{name}: spec.selector does not match its pod template's labels")
    spec = tpl["spec"]
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot"):
        errors.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if spec.get("automountServiceAccountToken") is not False:
        errors.append(f"{name}: automountServiceAccountToken is not false")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        claim = v.get("persistentVolumeClaim", {}).get("claimName")
        if claim and ("PersistentVolumeClaim", claim) not in by:
            errors.append(f"{name}: volume {v['name']} claims {claim}, which is not rendered")
        if "emptyDir" in v and "sizeLimit" not in v["emptyDir"]:
            errors.append(f"{name}: emptyDir {v['name']} has no sizeLimit")
        if "secret" in v and v["secret"].get("secretName") != "millrace-secret":
            errors.append(f"{name}: volume {v['name']} is not the Secret millrace-secret")
    ann = tpl["metadata"].get("annotations", {})
    for c in spec["containers"]:
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        if not (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            errors.append(f"{where}: securityContext must forbid privilege escalation, mount the root "
                          "file system read-only and drop ALL capabilities")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                errors.append(f"{where}: mounts {m['name']}, which is no volume of the pod")
            elif "secret" in volumes[m["name"]] and not m.get("readOnly"):
                errors.append(f"{where}: the secret is not mounted read-only")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if not get or get.get("path") != "/healthz":
                errors.append(f"{where}: no {probe} on GET /healthz")
            elif isinstance(get["port"], str) and get["port"] not in ports:
                errors.append(f"{where}: {probe} names port {get['port']}, which the container lacks")
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics" \
                or ann.get("prometheus.io/port") not in {str(p) for p in ports.values()}:
            errors.append(f"{where}: prometheus.io annotations do not point at a port of the container")
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        if not limit:
            errors.append(f"{where}: no memory limit")

for (kind, name), o in by.items():
    if kind != "Service":
        continue
    sel = o["spec"].get("selector", {})
    matched = [p for p, tpl in pods.items() if selects(sel, tpl["metadata"].get("labels", {}))]
    if len(matched) != 1:
        errors.append(f"Service {name}: selects {matched or 'no pods'} (one workload expected)")
        continue
    tpl = pods[matched[0]]
    names = {p.get("name") for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
    nums = {p["containerPort"] for c in tpl["spec"]["containers"] for p in c.get("ports", [])}
    for p in o["spec"]["ports"]:
        t = p.get("targetPort", p["port"])
        if t not in names and t not in nums:
            errors.append(f"Service {name}: targetPort {t} is no port of {matched[0]}'s containers")

sts = by.get(("StatefulSet", "millrace-worker"))
if sts:
    svc = by.get(("Service", sts["spec"].get("serviceName")))
    if not svc or svc["spec"].get("clusterIP") != "None":
        errors.append("StatefulSet millrace-worker: serviceName is not a headless Service")
    args = " ".join(sts["spec"]["template"]["spec"]["containers"][0].get("args", []))
    if f"$(POD_NAME).{sts['spec'].get('serviceName')}:" not in args:
        errors.append("StatefulSet millrace-worker: --advertise is not $(POD_NAME).<its serviceName>")

# The image is built with the toolchain Cargo.toml asks for.
cargo = open("Cargo.toml").read()
want = re.search(r'^rust-version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
froms = re.findall(r"^FROM\s+rust:(\S+)", open("Dockerfile").read(), re.M)
if not froms or not all(f == want or f.startswith(want + "-") for f in froms):
    errors.append(f"Dockerfile: the build stage's rust:{froms} is not Cargo.toml's rust-version {want}")

for e in errors:
    print(f"ERROR {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-k8s: {len(objs)} objects from {folder}: " + ", ".join(f"{k}/{n}" for k, n in sorted(by)))
EOF
echo "check-k8s: ok"
