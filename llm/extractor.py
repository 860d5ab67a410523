"""Deterministic extraction of what a request states plainly: sizes with units, ports, environment, provider,
engine names and versions, negations ("no database") and an explicit name.

Counting servers is deliberately *not* done here: regular expressions that count overfit the phrasings they were
tuned on (DESIGN.md measured 70 % on unseen requests). The model owns the counts; this module owns the facts whose
surface form is unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from blueprints.validation import CACHE_ENGINES, DATABASE_ENGINES

ROLES = ("web", "worker", "database", "cache", "kubernetes", "loadbalancer")

NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "sixteen": 16,
    "twenty": 20,
    "thirty-two": 32,
    "sixty-four": 64,
}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"

_DB_NAMES = r"postgres(?:ql)?|pg|psql|mysql|mariadb|maria|mongo(?:db)?"
_CACHE_NAMES = r"redis|valkey|memcached?"
_ENGINE_CANONICAL = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "pg": "postgresql",
    "psql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "maria": "mariadb",
    "mongo": "mongodb",
    "mongodb": "mongodb",
    "redis": "redis",
    "valkey": "valkey",
    "memcache": "memcached",
    "memcached": "memcached",
}

_MACHINE = r"(?:\s+(?:servers?|nodes?|instances?|machines?|vms?|boxes|hosts?|containers?|clusters?|tiers?|layer))?"
# Where each role is mentioned; used only to attach sizes and ports to the role they are written next to.
_ROLE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("loadbalancer", re.compile(r"\b(?:load[\s-]?balanc\w*|lbs?|haproxy|reverse[\s-]proxy|ingress)\b", re.I)),
    (
        "database",
        re.compile(rf"\b(?:(?:{_DB_NAMES})(?:\s*\d+(?:\.\d+)?)?|databases?|dbs?|sql){_MACHINE}\b", re.I),
    ),
    ("cache", re.compile(rf"\b(?:(?:{_CACHE_NAMES})(?:\s*\d+(?:\.\d+)?)?|cach(?:e|es|ing)){_MACHINE}\b", re.I)),
    ("kubernetes", re.compile(rf"\b(?:kubernetes|k8s|k3s|kube){_MACHINE}\b", re.I)),
    (
        "worker",
        re.compile(
            rf"\b(?:(?:background|batch|queue|job|async|celery|sidekiq)\s+)?(?:workers?|jobs?|consumers?|"
            rf"processors?|batch(?:\s+processing)?){_MACHINE}\b",
            re.I,
        ),
    ),
    (
        "web",
        re.compile(
            rf"\b(?:web|webservers?|app|application|api|frontend|front-end|backend|back-end|http|nginx|site|"
            rf"website){_MACHINE}\b",
            re.I,
        ),
    ),
    ("all", re.compile(r"\b(?:all|each|every|both)\s+(?:of\s+them|the\s+)?(?:servers?|nodes?|machines?|vms?)\b", re.I)),
    ("generic", re.compile(r"\b(?:servers?|nodes?|machines?|vms?|instances?|boxes|hosts?)\b", re.I)),
]

_UNIT = r"\s?(tb|tib|gb|gib|gigs?|gigabytes?|g|mb|mib|megabytes?|m)\b"
_MEMORY_RE = [
    re.compile(rf"{_NUM}{_UNIT}\s*(?:of\s+)?(?:ram|memory|mem)\b", re.I),
    re.compile(rf"\b(?:ram|memory|mem)\s*(?:of|with|:|=|is)?\s*{_NUM}{_UNIT}", re.I),
]
_STORAGE_RE = [
    re.compile(
        rf"{_NUM}{_UNIT}\s*(?:of\s+)?(?:(ssd|nvme|hdd)\s+)?(?:disks?|storage|ssds?|nvme|hdds?|volumes?|drives?|space)\b",
        re.I,
    ),
    re.compile(rf"\b(?:disks?|storage|volumes?)\s*(?:of|with|:|=|is)?\s*{_NUM}{_UNIT}", re.I),
]
_CPU_RE = [
    re.compile(rf"{_NUM}[\s-]?(?:v?cpus?|vcores?|cores?|processors?)\b", re.I),
    re.compile(rf"\b(?:v?cpus?|cores)\s*(?:of|:|=)?\s*{_NUM}\b(?!\s*(?:gb|mb|tb))", re.I),
]
# "4 vCPU / 8GB" or "2 cores, 4GB": a bare size written right after a CPU count is memory.
_BARE_AFTER_CPU = re.compile(
    rf"(?:v?cpus?|vcores?|cores?)\s*(?:/|,|and|\+|with)?\s*{_NUM}{_UNIT}(?!\s*(?:of\s+)?\w)", re.I
)
_TIER_RE = re.compile(r"\b(nvme|ssd|hdd)\b", re.I)

_PORT_RE = re.compile(r"\bports?\s*(?:number\s*)?(?::|=|of)?\s*((?:\d{2,5})(?:\s*(?:,|and|&|/|or)\s*\d{2,5})*)", re.I)

_ENVIRONMENTS = [
    ("production", re.compile(r"\b(?:production|prod)\b", re.I)),
    ("staging", re.compile(r"\b(?:staging|stage|pre-?prod(?:uction)?|preprod)\b", re.I)),
    ("development", re.compile(r"\b(?:development|dev|devel)\b", re.I)),
    ("test", re.compile(r"\b(?:test|testing|qa)\s*(?:env(?:ironment)?|setup|stack|cluster|lab)?\b", re.I)),
]
_ENV_TARGET = re.compile(
    r"\b(?:to|into|in|for|as)\s+(?:the\s+|a\s+|an\s+|our\s+)?"
    r"(production|prod|staging|stage|pre-?prod|development|dev|test|testing|qa)\b",
    re.I,
)
_NOT_ENV_CONTEXT = re.compile(r"\b(?:load|unit|smoke|stress|a/b|penetration|pen)[\s-]+test", re.I)

_PROVIDERS = [
    ("proxmox", re.compile(r"\b(?:proxmox|pve)\b", re.I)),
    ("docker", re.compile(r"\b(?:docker|docker-compose|compose)\b", re.I)),
    ("simulator", re.compile(r"\b(?:simulator|simulated|simulation)\b", re.I)),
]
# Kubernetes counts as the provider only when things are put *on* it; "a k8s cluster" is a resource, not a target.
_PROVIDER_TARGET = re.compile(
    r"\b(?:on|to|into|using|via|in)\s+(?:a\s+|the\s+|our\s+|an?\s+existing\s+)?(proxmox|docker|kubernetes|k8s)\b"
    r"(?!\s+(?:cluster|nodes?)\s+(?:with|of)\s)",
    re.I,
)

_NEGATION = re.compile(
    r"\b(?:no|without|w/o|skip(?:ping)?|exclude|excluding|remove|drop|delete|get\s+rid\s+of|"
    r"(?:do\s+not|don't|dont|doesn't|does\s+not|won't)\s+(?:need|want|require|use)|not\s+need\w*|nor)\s+"
    r"(?:a\s+|an\s+|any\s+|the\s+)?(?:separate\s+|dedicated\s+|external\s+|extra\s+)?"
    r"(database|databases|db|dbs|sql|persistence|cache|caching|redis|memcached|valkey|load[\s-]?balanc\w*|lbs?|"
    r"workers?|background\s+workers?|kubernetes|k8s)\b",
    re.I,
)
_NEGATED_ROLE = {
    "database": "database",
    "databases": "database",
    "db": "database",
    "dbs": "database",
    "sql": "database",
    "persistence": "database",
    "cache": "cache",
    "caching": "cache",
    "redis": "cache",
    "memcached": "cache",
    "valkey": "cache",
    "kubernetes": "kubernetes",
    "k8s": "kubernetes",
}

_NAME_RE = re.compile(r"\b(?:called|named|name\s+it|name:)\s+[\"'`]?([A-Za-z][A-Za-z0-9_-]{0,40})", re.I)
_PURPOSE_RE = re.compile(
    r"\bfor\s+(?:a|an|my|our|the)\s+(?:new\s+|small\s+|simple\s+)?([a-z][a-z0-9-]{1,30})\s+"
    r"(?:app|application|site|website|shop|store|blog|service|platform|api|backend)\b",
    re.I,
)
_ANY_NUMBER = re.compile(r"\b(?:\d+|" + "|".join(NUMBER_WORDS) + r"|single|couple|pair|dozen|several|few)\b", re.I)
_SENTENCE_SPLIT = re.compile(r"[.;!?\n]+(?:\s|$)")


@dataclass
class Sizes:
    cpu: float | None = None
    memory: str | None = None
    storage: str | None = None
    storage_tier: str | None = None

    def merged_over(self, base: Sizes) -> Sizes:
        return Sizes(
            cpu=self.cpu if self.cpu is not None else base.cpu,
            memory=self.memory or base.memory,
            storage=self.storage or base.storage,
            storage_tier=self.storage_tier or base.storage_tier,
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Facts:
    """What the text says plainly. Absent facts are None/empty: the compiler fills defaults and lists them."""

    environment: str | None = None
    provider: str | None = None
    database_engine: str | None = None
    database_version: str | None = None
    cache_engine: str | None = None
    cache_version: str | None = None
    negated: set[str] = field(default_factory=set)
    sizes: dict[str, Sizes] = field(default_factory=dict)  # role (or "all") -> sizes written next to it
    ports: dict[str, list[int]] = field(default_factory=dict)
    name: str | None = None
    states_numbers: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "provider": self.provider,
            "database_engine": self.database_engine,
            "database_version": self.database_version,
            "cache_engine": self.cache_engine,
            "cache_version": self.cache_version,
            "negated": sorted(self.negated),
            "sizes": {role: s.as_dict() for role, s in self.sizes.items()},
            "ports": self.ports,
            "name": self.name,
        }


def _number(token: str) -> float:
    token = token.lower()
    return float(NUMBER_WORDS[token]) if token in NUMBER_WORDS else float(token)


def _size(number: str, unit: str) -> str | None:
    value = _number(number)
    unit = unit.lower()
    if unit.startswith(("t",)):
        suffix = "TB"
    elif unit.startswith("g"):
        suffix = "GB"
    elif unit.startswith("m"):
        suffix = "MB"
    else:
        return None
    if value <= 0:
        return None
    shown = str(int(value)) if value == int(value) else f"{value:g}"
    return f"{shown}{suffix}"


def _role_mentions(sentence: str) -> list[tuple[int, int, str]]:
    """(start, end, role) for each role word; earlier patterns win where spans overlap ("database server")."""
    taken: list[tuple[int, int, str]] = []
    kube = bool(re.search(r"\b(?:kubernetes|k8s|k3s|kube)\b", sentence, re.I))
    for role, pattern in _ROLE_PATTERNS:
        for match in pattern.finditer(sentence):
            start, end = match.span()
            if any(start < e and s < end for s, e, _ in taken):
                continue
            if role == "generic":
                word = match.group(0).lower()
                role = "kubernetes" if kube and word.startswith("node") else "web"
            taken.append((start, end, role))
    return sorted(taken)


_EACH = re.compile(r"\s*(?:each|apiece|for\s+all|for\s+every\w*|on\s+all)\b", re.I)


def _attribute(span: tuple[int, int], mentions: list[tuple[int, int, str]], sentence: str = "") -> str:
    """The role a value belongs to: the nearest mention before it, else the nearest after it, else all."""
    start, end = span
    before = [m for m in mentions if m[1] <= start]
    after = [m for m in mentions if m[0] >= end]
    if _EACH.match(sentence, end) and len({m[2] for m in before}) > 1:
        return "all"  # "two app nodes, one mysql, 8GB RAM each": every machine named before it
    if before:
        nearest = before[-1]
        # "16GB RAM app servers": a role written right after the value, closer than the one before, owns it.
        if after and after[0][0] - end < 4 and start - nearest[1] > after[0][0] - end:
            return after[0][2]
        return nearest[2]
    if after:
        return after[0][2]
    return "all"


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_SPLIT.split(text) if s.strip()]


def _find_sizes(sentence: str, mentions: list[tuple[int, int, str]], out: dict[str, Sizes]) -> None:
    def slot(span: tuple[int, int]) -> Sizes:
        return out.setdefault(_attribute(span, mentions, sentence), Sizes())

    for pattern in _MEMORY_RE:
        for m in pattern.finditer(sentence):
            value = _size(m.group(1), m.group(2))
            target = slot(m.span())
            if value and target.memory is None:
                target.memory = value
    for pattern in _STORAGE_RE:
        for m in pattern.finditer(sentence):
            value = _size(m.group(1), m.group(2))
            target = slot(m.span())
            if value and target.storage is None:
                target.storage = value
            tier = m.group(3) if pattern.groups >= 3 else None
            tier = tier or (found.group(1) if (found := _TIER_RE.search(m.group(0))) else None)
            if tier and target.storage_tier is None:
                target.storage_tier = tier.lower()
    for pattern in _CPU_RE:
        for m in pattern.finditer(sentence):
            target = slot(m.span())
            if target.cpu is None:
                target.cpu = _number(m.group(1))
    for m in _BARE_AFTER_CPU.finditer(sentence):
        value = _size(m.group(1), m.group(2))
        target = slot(m.span())
        if value and target.memory is None:
            target.memory = value


def _find_engine(text: str, names: str, negated: bool) -> tuple[str | None, str | None]:
    if negated:
        return None, None
    for m in re.finditer(rf"\b({names})\b(?:\s*v?(\d+(?:\.\d+)?))?", text, re.I):
        window = text[max(0, m.start() - 40) : m.start()] + m.group(1)
        if any(neg.end() == len(window) for neg in _NEGATION.finditer(window)):
            continue
        engine = _ENGINE_CANONICAL[m.group(1).lower()]
        version = _version(engine, m.group(2))
        return engine, version
    return None, None


def _version(engine: str, raw: str | None) -> str | None:
    if not raw:
        return None
    known = DATABASE_ENGINES.get(engine) or CACHE_ENGINES.get(engine) or ()
    if raw in known:
        return raw
    majors = [v for v in known if v.split(".")[0] == raw]
    return majors[0] if len(majors) == 1 else None


def extract(text: str) -> Facts:
    """Read the plainly stated facts of a request (or of a follow-up instruction)."""
    facts = Facts()
    facts.states_numbers = bool(_ANY_NUMBER.search(text))

    for m in _NEGATION.finditer(text):
        word = re.sub(r"\s+", " ", m.group(1).lower())
        if word.startswith(("load", "lb")):
            facts.negated.add("loadbalancer")
        elif "worker" in word:
            facts.negated.add("worker")
        else:
            facts.negated.add(_NEGATED_ROLE[word])

    env_text = _NOT_ENV_CONTEXT.sub(" ", text)
    target = _ENV_TARGET.search(env_text)
    if target:
        word = target.group(1).lower()
        facts.environment = next(
            env for env, pattern in _ENVIRONMENTS if pattern.fullmatch(word) or pattern.match(word)
        )
    else:
        found = [(m.start(), env) for env, pattern in _ENVIRONMENTS for m in [pattern.search(env_text)] if m]
        if found:
            facts.environment = min(found)[1]

    target = _PROVIDER_TARGET.search(text)
    if target:
        word = target.group(1).lower()
        facts.provider = "kubernetes" if word == "k8s" else word
    else:
        found = [(m.start(), p) for p, pattern in _PROVIDERS for m in [pattern.search(text)] if m]
        if found:
            facts.provider = min(found)[1]

    facts.database_engine, facts.database_version = _find_engine(text, _DB_NAMES, "database" in facts.negated)
    facts.cache_engine, facts.cache_version = _find_engine(text, _CACHE_NAMES, "cache" in facts.negated)

    for sentence in _sentences(text):
        mentions = _role_mentions(sentence)
        _find_sizes(sentence, mentions, facts.sizes)
        for m in _PORT_RE.finditer(sentence):
            role = _attribute(m.span(), mentions, sentence)
            for port in re.findall(r"\d{2,5}", m.group(1)):
                if 1 <= int(port) <= 65535:
                    facts.ports.setdefault(role, [])
                    if int(port) not in facts.ports[role]:
                        facts.ports[role].append(int(port))

    name = _NAME_RE.search(text) or _PURPOSE_RE.search(text)
    if name:
        facts.name = slug(name.group(1))
    return facts


def slug(value: str) -> str | None:
    """A DNS-label form of a name, or None when nothing usable is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:40].strip("-")
    if not label or not label[0].isalpha():
        return None
    return label
