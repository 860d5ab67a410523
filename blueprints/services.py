"""Blueprint writes and checks: validate, create, add a version (content-addressed), diff."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from aicdn_project import roles
from aicdn_project.audit import audit_record
from aicdn_project.errors import Conflict, PermissionDenied, ValidationFailed
from blueprints import diff as diff_module
from blueprints.models import Blueprint, BlueprintVersion
from blueprints.parsing import canonical_json, check_document, parse_source, to_yaml
from blueprints.validation import validate_document


@dataclass
class ValidationResult:
    valid: bool
    errors: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        summary = None
        if self.document is not None and self.valid:
            types: dict[str, int] = {}
            for res in self.document["resources"]:
                types[res["type"]] = types.get(res["type"], 0) + int(res.get("count", 1))
            summary = {"name": self.document["name"], "resources": len(self.document["resources"]), "instances": types}
        return {"valid": self.valid, "errors": self.errors, "summary": summary}


def blueprint_read(*, source: str | bytes | None = None, document: Any = None) -> tuple[dict[str, Any], str]:
    """Turn input (text or an already-parsed object) into (document, source text); raises on unreadable input."""
    if (source is None) == (document is None):
        raise ValidationFailed(
            "give the blueprint either as text (source / a YAML body) or as an object (document)",
            code="missing_blueprint",
            details={"errors": [{"path": "$", "message": "exactly one of source or document is required"}]},
        )
    if source is not None:
        doc = parse_source(source)
        text = source.decode("utf-8") if isinstance(source, bytes) else source
        return doc, text
    doc = check_document(document)
    return doc, to_yaml(doc)


def blueprint_validate(*, source: str | bytes | None = None, document: Any = None) -> ValidationResult:
    """Validate without saving: every schema and semantic error, each with a JSON path."""
    try:
        doc, _ = blueprint_read(source=source, document=document)
    except ValidationFailed as exc:
        return ValidationResult(False, list(exc.details.get("errors", [{"path": "$", "message": exc.message}])))
    errors = validate_document(doc)
    return ValidationResult(not errors, errors, doc)


def _checked(source: str | bytes | None, document: Any) -> tuple[dict[str, Any], str]:
    doc, text = blueprint_read(source=source, document=document)
    errors = validate_document(doc)
    if errors:
        raise ValidationFailed(
            f"blueprint is invalid: {len(errors)} error(s); first at {errors[0]['path']}: {errors[0]['message']}",
            details={"errors": errors},
        )
    return doc, text


def content_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def blueprint_create(
    *, owner: Any, source: str | bytes | None = None, document: Any = None, message: str = ""
) -> BlueprintVersion:
    """Create a blueprint named after the document and its first version."""
    doc, text = _checked(source, document)
    if not roles.has_role(owner, roles.REQUESTERS, roles.OPERATORS, roles.REVIEWERS):
        raise PermissionDenied("only members of a role group may create blueprints", code="no_role")
    with transaction.atomic():
        if Blueprint.objects.filter(owner=owner, name=doc["name"]).exists():
            raise Conflict(
                f"you already have a blueprint named {doc['name']!r}; add a version to it instead",
                code="blueprint_exists",
                details={"name": doc["name"]},
            )
        try:
            with transaction.atomic():
                blueprint = Blueprint.objects.create(
                    owner=owner, name=doc["name"], description=doc.get("description", "")
                )
        except IntegrityError as exc:  # a concurrent create won the unique constraint
            raise Conflict(f"blueprint {doc['name']!r} already exists", code="blueprint_exists") from exc
        audit_record(
            actor=owner,
            action="blueprint.created",
            object_type="blueprint",
            object_id=blueprint.pk,
            object_repr=blueprint.name,
            after={"name": blueprint.name},
        )
        version, _ = _version_append(blueprint=blueprint, author=owner, doc=doc, text=text, message=message)
    return version


def blueprint_version_create(
    *,
    blueprint_id: int,
    author: Any,
    source: str | bytes | None = None,
    document: Any = None,
    message: str = "",
) -> tuple[BlueprintVersion, bool]:
    """Add a version; identical content returns the existing version (created=False) and moves head to it."""
    doc, text = _checked(source, document)
    with transaction.atomic():
        blueprint = Blueprint.objects.select_for_update().filter(pk=blueprint_id).first()
        if blueprint is None or not (blueprint.owner_id == author.pk or roles.is_admin(author)):
            # Same answer for "absent" and "not yours" so ids cannot be probed.
            raise PermissionDenied(
                f"blueprint {blueprint_id} does not exist or is not yours to change", code="not_owner"
            )
        return _version_append(blueprint=blueprint, author=author, doc=doc, text=text, message=message)


def _version_append(
    *, blueprint: Blueprint, author: Any, doc: dict[str, Any], text: str, message: str
) -> tuple[BlueprintVersion, bool]:
    sha = content_hash(doc)
    existing = BlueprintVersion.objects.filter(blueprint=blueprint, sha256=sha).first()
    previous_head = blueprint.head_id
    if existing is not None:
        version, created = existing, False
    else:
        last = BlueprintVersion.objects.filter(blueprint=blueprint).order_by("-number").first()
        version = BlueprintVersion.objects.create(
            blueprint=blueprint,
            number=(last.number + 1) if last else 1,
            sha256=sha,
            commit_id=sha[:12],
            source_text=text,
            canonical_json=canonical_json(doc),
            document=doc,
            parent=blueprint.head,
            author=author,
            message=message[:500],
        )
        created = True
    if previous_head != version.pk:
        Blueprint.objects.filter(pk=blueprint.pk).update(head=version, description=doc.get("description", ""))
        blueprint.head = version
    if created or previous_head != version.pk:
        audit_record(
            actor=author,
            action="blueprint.version_created" if created else "blueprint.head_moved",
            object_type="blueprint",
            object_id=blueprint.pk,
            object_repr=f"{blueprint.name}@{version.commit_id}",
            before={"head": previous_head},
            after={"head": version.pk, "commit_id": version.commit_id, "number": version.number},
        )
    return version, created


def version_diff(*, old: BlueprintVersion, new: BlueprintVersion) -> dict[str, Any]:
    return {
        "from": {"id": old.pk, "commit_id": old.commit_id, "number": old.number},
        "to": {"id": new.pk, "commit_id": new.commit_id, "number": new.number},
        "structured": diff_module.structured_diff(old.document, new.document),
        "unified": diff_module.unified_yaml_diff(
            old.document,
            new.document,
            old_label=f"{old.blueprint.name}@{old.commit_id}",
            new_label=f"{new.blueprint.name}@{new.commit_id}",
        ),
    }
