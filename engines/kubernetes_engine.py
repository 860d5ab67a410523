"""The Kubernetes engine: a namespace per environment; Deployments, StatefulSets, Services and PVCs per resource."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from blueprints.validation import SizeError, parse_size
from engines import labels as L
from engines.base import (
    ConvergingEngine,
    DeleteResult,
    EngineContext,
    EngineError,
    HealthReport,
    ManagedObject,
    ResourceResult,
    check_config_keys,
    instance_count,
    specs_of,
)
from engines.images import resolve_image, resource_ports
from engines.registry import register_engine

MERGE_PATCH = "application/merge-patch+json"
# kind -> (API class, method suffix, apiVersion)
KINDS: dict[str, tuple[type, str, str]] = {
    "Deployment": (k8s.AppsV1Api, "deployment", "apps/v1"),
    "StatefulSet": (k8s.AppsV1Api, "stateful_set", "apps/v1"),
    "Service": (k8s.CoreV1Api, "service", "v1"),
    "PersistentVolumeClaim": (k8s.CoreV1Api, "persistent_volume_claim", "v1"),
}
# Pods of a load balancer's targets carry this label (prefix form: the LB name alone fills the 63-char name part).
LB_LABEL_PREFIX = "lb.ai-cdn/"
TARGETS_ANNOTATION = "ai-cdn/targets"


@contextmanager
def k8s_errors(what: str) -> Iterator[None]:
    """Map client failures to EngineError: 5xx / 429 / connection failures are transient, other 4xx permanent."""
    try:
        yield
    except EngineError:
        raise
    except ApiException as exc:
        status = int(exc.status or 500)
        reason = exc.reason or ""
        with suppress(ValueError, AttributeError):
            reason = json.loads(exc.body or "{}").get("message") or reason
        transient = status >= 500 or status in (408, 409, 429)
        raise EngineError(
            f"{what}: kubernetes answered {status}: {reason}", permanent=not transient, details={"status": status}
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise EngineError(f"{what}: kubernetes API unreachable: {exc}", permanent=False, code="unreachable") from exc
    except ValidationError as exc:
        raise EngineError(f"{what}: invalid request: {exc}", permanent=True, code="invalid_manifest") from exc


def _quantity_cpu(cpu: Any) -> str:
    return f"{round(float(cpu) * 1000)}m"


def _quantity_bytes(size: str) -> str:
    try:
        num = parse_size(size)
    except SizeError as exc:
        raise EngineError(str(exc), permanent=True) from exc
    return f"{max(1, math.ceil(num / 1024**2))}Mi"


@register_engine("kubernetes")
class KubernetesEngine(ConvergingEngine):
    """Config: host (API URL), ca_file, verify_ssl (true), namespace_prefix ("aicdn-"), storage_class,
    image_map, default_image, engine_images, commands, proxy_image (as the Docker engine), request_timeout (s).
    The optional `token` secret is sent as a bearer token.
    """

    resource_types = frozenset({"compute", "container", "database", "cache", "loadbalancer", "volume"})

    CONFIG_TYPES: Mapping[str, type | tuple[type, ...]] = {
        "host": str,
        "ca_file": str,
        "verify_ssl": bool,
        "namespace_prefix": str,
        "storage_class": str,
        "image_map": dict,
        "default_image": str,
        "engine_images": dict,
        "commands": dict,
        "proxy_image": str,
        "request_timeout": (int, float),
    }

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(config, secrets)
        self._api_client: k8s.ApiClient | None = None

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[dict[str, str]]:
        errors = check_config_keys(config, cls.CONFIG_TYPES)
        if "host" not in config:
            errors.append({"path": "$.host", "message": "is required"})
        return errors

    # ------------------------------------------------------------------ client

    @property
    def api_client(self) -> k8s.ApiClient:
        if self._api_client is None:
            configuration = k8s.Configuration()
            configuration.host = str(self.config["host"]).rstrip("/")
            configuration.verify_ssl = bool(self.config.get("verify_ssl", True))
            if self.config.get("ca_file"):
                configuration.ssl_ca_cert = self.config["ca_file"]
            if self.secrets.get("token"):
                configuration.api_key = {"authorization": self.secrets["token"]}
                configuration.api_key_prefix = {"authorization": "Bearer"}
            configuration.retries = 0
            self._api_client = k8s.ApiClient(configuration)
        return self._api_client

    def _timeout(self) -> float:
        return float(self.config.get("request_timeout", 30))

    def _call(self, kind: str, verb: str, *args: Any, **kwargs: Any) -> Any:
        """Call `<verb>_namespaced_<kind>` and return the decoded JSON body (no model round trip)."""
        api_cls, suffix, _ = KINDS[kind]
        method = getattr(api_cls(self.api_client), f"{verb}_namespaced_{suffix}")
        response = method(*args, _preload_content=False, _request_timeout=self._timeout(), **kwargs)
        data = response.data
        return json.loads(data) if data else {}

    def namespace(self, ctx: EngineContext) -> str:
        return f"{self.config.get('namespace_prefix', 'aicdn-')}{ctx.environment}".lower()[:63]

    @staticmethod
    def _selector(ctx: EngineContext, name: str | None = None) -> str:
        parts = [f"{L.MANAGED}=true", f"{L.ENV}={ctx.environment}"]
        if name is not None:
            parts.append(f"{L.RESOURCE}={name}")
        return ",".join(parts)

    def _ensure_namespace(self, ctx: EngineContext) -> None:
        ns = self.namespace(ctx)
        core = k8s.CoreV1Api(self.api_client)
        with k8s_errors(f"reading namespace {ns}"):
            try:
                core.read_namespace(ns, _preload_content=False, _request_timeout=self._timeout())
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise
        body = k8s.V1Namespace(
            api_version="v1", kind="Namespace", metadata=k8s.V1ObjectMeta(name=ns, labels=self._ns_labels(ctx))
        )
        with k8s_errors(f"creating namespace {ns}"):
            try:
                core.create_namespace(body, _preload_content=False, _request_timeout=self._timeout())
            except ApiException as exc:
                if exc.status != 409:  # made by a concurrent operation: fine
                    raise

    @staticmethod
    def _ns_labels(ctx: EngineContext) -> dict[str, str]:
        return {L.MANAGED: "true", L.ENV: ctx.environment}

    # --------------------------------------------------------------- manifests

    def _labels(self, resource: Mapping[str, Any], ctx: EngineContext) -> dict[str, str]:
        labels = L.managed_labels(environment=ctx.environment, resource=resource, deployment_id=ctx.deployment_id)
        if not L.valid_label_value(ctx.deployment_id):
            raise EngineError(f"deployment id {ctx.deployment_id!r} is not a valid label value", permanent=True)
        return labels

    def _container(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        specs = specs_of(resource)
        image, command = resolve_image(resource, self.config)
        container: dict[str, Any] = {"name": str(resource["name"]), "image": image}
        if command:
            container["command"] = command
        limits: dict[str, str] = {}
        if specs.get("cpu"):
            limits["cpu"] = _quantity_cpu(specs["cpu"])
        if specs.get("memory"):
            limits["memory"] = _quantity_bytes(str(specs["memory"]))
        if limits:
            container["resources"] = {"limits": limits, "requests": dict(limits)}
        if specs.get("env"):
            container["env"] = [
                {"name": k, "value": str(v).lower() if isinstance(v, bool) else str(v)}
                for k, v in sorted(specs["env"].items())
            ]
        ports = resource_ports(resource) if resource["type"] != "loadbalancer" else []
        if ports:
            container["ports"] = [
                {"containerPort": target, "protocol": "UDP" if proto == "udp" else "TCP"}
                for _port, target, proto in ports
            ]
        security: dict[str, Any] = {}
        if specs.get("read_only_root"):
            security["readOnlyRootFilesystem"] = True
        if isinstance(specs.get("run_as_user"), int):
            security["runAsUser"] = specs["run_as_user"]
        if specs.get("privileged"):
            security["privileged"] = True
        if security:
            container["securityContext"] = security
        return container

    def _pod_template(self, resource: Mapping[str, Any], ctx: EngineContext, labels: dict[str, str]) -> dict:
        pod_labels = {k: labels[k] for k in (L.MANAGED, L.ENV, L.RESOURCE, L.TYPE)}
        return {"metadata": {"labels": pod_labels}, "spec": {"containers": [self._container(resource)]}}

    def _service(
        self, resource: Mapping[str, Any], ctx: EngineContext, labels: dict[str, str], **spec: Any
    ) -> dict[str, Any]:
        ports = [
            {
                "name": f"p{port}",
                "port": port,
                "targetPort": target,
                "protocol": "UDP" if proto == "udp" else "TCP",
            }
            for port, target, proto in resource_ports(resource)
        ]
        selector = spec.pop("selector", None) or {L.ENV: ctx.environment, L.RESOURCE: str(resource["name"])}
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": str(resource["name"]), "labels": labels},
            "spec": {"selector": selector, "ports": ports, **spec},
        }

    def manifests(self, resource: Mapping[str, Any], ctx: EngineContext) -> list[dict[str, Any]]:
        """The objects one blueprint resource becomes (see docs/engines.md)."""
        self.check_supported(resource)
        name, rtype, specs = str(resource["name"]), resource["type"], specs_of(resource)
        labels = self._labels(resource, ctx)
        selector = {"matchLabels": {L.ENV: ctx.environment, L.RESOURCE: name}}
        replicas = int(specs.get("replicas") or instance_count(resource))
        if rtype in ("compute", "container", "cache"):
            objs = [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "replicas": replicas,
                        "selector": selector,
                        "template": self._pod_template(resource, ctx, labels),
                    },
                }
            ]
            if resource_ports(resource):
                objs.append(self._service(resource, ctx, labels))
            return objs
        if rtype == "database":
            # Read replicas join the primary: the StatefulSet runs 1 + replicas pods.
            return [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "serviceName": name,
                        "replicas": 1 + int(specs.get("replicas") or 0),
                        "selector": selector,
                        "template": self._pod_template(resource, ctx, labels),
                    },
                },
                self._service(resource, ctx, labels, clusterIP="None"),
            ]
        if rtype == "loadbalancer":
            if not specs.get("targets"):
                raise EngineError(f"load balancer {name!r} has no targets", permanent=True)
            service = self._service(
                resource, ctx, labels, type="LoadBalancer", selector={LB_LABEL_PREFIX + name: "true"}
            )
            # Remembered on the Service so delete (and a later update) can unlabel the targets it labelled.
            service["metadata"]["annotations"] = {TARGETS_ANNOTATION: json.dumps(sorted(specs["targets"]))}
            return [service]
        # volume
        size = _quantity_bytes(str(specs.get("storage") or "1GB"))
        pvc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        }
        if self.config.get("storage_class"):
            pvc["spec"]["storageClassName"] = self.config["storage_class"]
        return [pvc]

    # ------------------------------------------------------------------ reads

    def _list(self, kind: str, ctx: EngineContext, name: str | None = None) -> list[dict[str, Any]]:
        ns = self.namespace(ctx)
        with k8s_errors(f"listing {kind} in {ns}"):
            try:
                data = self._call(kind, "list", ns, label_selector=self._selector(ctx, name))
            except ApiException as exc:
                if exc.status == 404:  # the namespace does not exist yet
                    return []
                raise
        # The selector is also checked here: the result must never include an object we did not label.
        return [
            item
            for item in data.get("items", [])
            if L.is_managed(item.get("metadata", {}).get("labels"), environment=ctx.environment, resource_name=name)
        ]

    def _read_named(self, kind: str, name: str, ctx: EngineContext) -> dict[str, Any] | None:
        ns = self.namespace(ctx)
        with k8s_errors(f"reading {kind} {ns}/{name}"):
            try:
                return dict(self._call(kind, "read", name, ns))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _objects(self, ctx: EngineContext, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for kind in KINDS:
            for item in self._list(kind, ctx, name):
                item.setdefault("kind", kind)
                found.append(item)
        return found

    # ----------------------------------------------------------------- writes

    def _apply(self, manifest: dict[str, Any], ctx: EngineContext) -> tuple[dict[str, Any], bool, bool]:
        """Create or converge one object; returns (object, adopted, changed)."""
        kind, name, ns = manifest["kind"], manifest["metadata"]["name"], self.namespace(ctx)
        wanted = manifest["metadata"]["labels"][L.SPEC_HASH]
        current = self._read_named(kind, name, ctx)
        if current is None:
            with k8s_errors(f"creating {kind} {ns}/{name}"):
                try:
                    return self._call(kind, "create", ns, manifest), False, True
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            current = self._read_named(kind, name, ctx)  # made by an earlier try or a concurrent one
            if current is None:
                raise EngineError(f"{kind} {ns}/{name} conflicted and then vanished", permanent=False)
        labels = current.get("metadata", {}).get("labels") or {}
        if not L.is_managed(
            labels, environment=ctx.environment, resource_name=manifest["metadata"]["labels"][L.RESOURCE]
        ):
            raise EngineError(f"{kind} {ns}/{name} exists and ai-cdn does not manage it", permanent=True)
        if labels.get(L.SPEC_HASH) == wanted:
            return current, True, False
        # JSON merge patch: maps merge, lists (containers, ports) are replaced whole, as the blueprint says.
        patch = {"metadata": {k: v for k, v in manifest["metadata"].items() if k != "name"}, "spec": manifest["spec"]}
        with k8s_errors(f"updating {kind} {ns}/{name}"):
            return self._call(kind, "patch", name, ns, patch, _content_type=MERGE_PATCH), True, True

    def _delete_object(self, kind: str, name: str, ctx: EngineContext) -> bool:
        ns = self.namespace(ctx)
        with k8s_errors(f"deleting {kind} {ns}/{name}"):
            try:
                self._call(kind, "delete", name, ns, body={"propagationPolicy": "Foreground"})
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise

    def _label_targets(self, resource: Mapping[str, Any], ctx: EngineContext, value: str | None) -> None:
        """Add (value "true") or remove (None) the load balancer's label on its targets' pod templates."""
        key = LB_LABEL_PREFIX + str(resource["name"])
        ns = self.namespace(ctx)
        for target in specs_of(resource).get("targets") or []:
            for kind in ("Deployment", "StatefulSet"):
                for item in self._list(kind, ctx, str(target)):
                    pod_labels = item.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
                    if pod_labels.get(key) == value:
                        continue
                    patch = {"spec": {"template": {"metadata": {"labels": {key: value}}}}}
                    with k8s_errors(f"labelling {kind} {ns}/{target} for {resource['name']}"):
                        self._call(kind, "patch", item["metadata"]["name"], ns, patch, _content_type=MERGE_PATCH)

    def _lb_targets(self, name: str, ctx: EngineContext, service: dict[str, Any] | None = None) -> list[str]:
        service = service if service is not None else self._read_named("Service", name, ctx)
        annotations = ((service or {}).get("metadata") or {}).get("annotations") or {}
        try:
            return list(json.loads(annotations.get(TARGETS_ANNOTATION) or "[]"))
        except ValueError:
            return []

    def _converge(self, resource: Mapping[str, Any], ctx: EngineContext) -> ResourceResult:
        manifests = self.manifests(resource, ctx)
        self._ensure_namespace(ctx)
        if resource["type"] == "loadbalancer":
            dropped = set(self._lb_targets(str(resource["name"]), ctx)) - set(specs_of(resource)["targets"])
            self._label_targets({"name": resource["name"], "specs": {"targets": sorted(dropped)}}, ctx, None)
        adopted_all, changed = True, False
        for manifest in manifests:
            _, adopted, obj_changed = self._apply(manifest, ctx)
            adopted_all = adopted_all and adopted
            changed = changed or obj_changed
        wanted = {(m["kind"], m["metadata"]["name"]) for m in manifests}
        for obj in self._objects(ctx, str(resource["name"])):
            if (obj["kind"], obj["metadata"]["name"]) not in wanted:
                self._delete_object(obj["kind"], obj["metadata"]["name"], ctx)
                changed = True
        if resource["type"] == "loadbalancer":
            self._label_targets(resource, ctx, "true")
        result = self.read(str(resource["name"]), ctx)
        if result is None:
            raise EngineError(f"{resource['name']}: objects vanished right after they were applied", permanent=False)
        result.adopted, result.changed = adopted_all, changed
        return result

    # -------------------------------------------------------------- interface

    def health(self) -> HealthReport:
        started = time.monotonic()
        try:
            with k8s_errors("kubernetes health"):
                # GET /version (the client's VersionApi asks for "/version/", which not every server routes).
                method, url, headers, body, post = self.api_client.param_serialize(
                    "GET", "/version", header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
                )
                response = self.api_client.call_api(method, url, headers, body, post, _request_timeout=self._timeout())
                response.read()
                if response.status >= 400:
                    raise EngineError(f"kubernetes /version answered {response.status}", permanent=False)
                version = json.loads(response.data or b"{}")
        except EngineError as exc:
            return HealthReport(False, exc.message, (time.monotonic() - started) * 1000)
        detail = f"kubernetes {version.get('gitVersion', 'unknown version')}"
        return HealthReport(True, detail, (time.monotonic() - started) * 1000)

    def read(self, name: str, ctx: EngineContext) -> ResourceResult | None:
        objs = self._objects(ctx, name)
        if not objs:
            return None
        ns = self.namespace(ctx)
        order = list(KINDS)
        objs.sort(key=lambda o: order.index(o["kind"]))
        first = objs[0]
        labels = dict(first["metadata"].get("labels") or {})
        outputs: dict[str, Any] = {"namespace": ns, "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objs]}
        status = "available"
        for obj in objs:
            spec, state = obj.get("spec") or {}, obj.get("status") or {}
            if obj["kind"] in ("Deployment", "StatefulSet"):
                outputs["replicas"] = spec.get("replicas")
                ready = state.get("readyReplicas")
                outputs["ready_replicas"] = ready or 0
                status = "running" if ready == spec.get("replicas") else "progressing"
            elif obj["kind"] == "Service":
                outputs["host"] = f"{obj['metadata']['name']}.{ns}.svc"
                outputs["ports"] = [p.get("port") for p in spec.get("ports") or []]
                if spec.get("type") == "LoadBalancer":
                    ingress = (state.get("loadBalancer") or {}).get("ingress") or []
                    outputs["ingress"] = [i.get("ip") or i.get("hostname") for i in ingress]
                    status = "available" if ingress else "pending"
            elif obj["kind"] == "PersistentVolumeClaim":
                outputs["size"] = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
                status = (state.get("phase") or "Pending").lower()
        return ResourceResult(
            name=name,
            type=labels.get(L.TYPE, ""),
            status=status,
            object_ids=[f"{o['kind']}/{ns}/{o['metadata']['name']}" for o in objs],
            outputs=outputs,
            labels=labels,
            changed=False,
        )

    def delete(self, name: str, ctx: EngineContext) -> DeleteResult:
        ns = self.namespace(ctx)
        deleted = []
        for obj in self._objects(ctx, name):
            if obj["kind"] == "Service" and (obj.get("spec") or {}).get("type") == "LoadBalancer":
                targets = self._lb_targets(name, ctx, obj)
                self._label_targets({"name": name, "specs": {"targets": targets}}, ctx, None)
            if self._delete_object(obj["kind"], obj["metadata"]["name"], ctx):
                deleted.append(f"{obj['kind']}/{ns}/{obj['metadata']['name']}")
        return DeleteResult(name=name, deleted_ids=deleted)

    def list_managed(self, ctx: EngineContext) -> list[ManagedObject]:
        ns = self.namespace(ctx)
        return [
            ManagedObject(
                o["kind"], f"{o['kind']}/{ns}/{o['metadata']['name']}", o["metadata"]["name"], o["metadata"]["labels"]
            )
            for o in self._objects(ctx)
        ]
