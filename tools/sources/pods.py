"""Which service a pod (or instance) belongs to.

Metrics exported per pod name the pod, not its service: ``checkout-7d9f8b6c5d-x2k4q`` is a pod
of the Deployment ``checkout``. `service_of` strips what Kubernetes appends to a workload's
name, so every pod of one workload lands on one service:

* a Deployment's pods: ``<name>-<pod-template-hash>-<5 chars>`` (``checkout-7d9f8b6c5d-x2k4q``);
* a StatefulSet's pods: ``<name>-<ordinal>`` (``db-0``);
* a DaemonSet's or Job's pods: ``<name>-<5 chars>`` when those contain a digit (``fluentd-x7k2p``;
  a name part such as ``-https`` is left alone).

The hashes are written in Kubernetes' "safe" alphabet (``rand.SafeEncodeString``: consonants and
digits without vowels, 0, 1 or 3), which ordinary name parts such as ``-service`` or ``-v2`` never
match. Anything else is its own service. A service map (`ServiceMap.read`, the CLI's
``--service-map FILE``) overrides the rule: exact names first, then glob patterns in file order.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from tools.contract import InputError

__all__ = ["ServiceMap", "service_of"]

_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_REPLICASET = re.compile(rf"^(?P<name>.+?)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_ORDINAL = re.compile(r"^(?P<name>.+?)-\d+$")
_LONE_HASH = re.compile(rf"^(?P<name>.+?)-(?=[a-z]*\d){_SAFE}{{5}}$")
_GLOB_CHARS = "*?["
# The column names a service-map CSV may give its first column.
_KEY_COLUMNS = ("pod", "pattern", "instance", "name")


def service_of(pod: str) -> str:
    """The workload a pod name belongs to (see the module docstring); other names unchanged."""
    name = pod.strip()
    for rule in (_REPLICASET, _ORDINAL, _LONE_HASH):
        found = rule.match(name)
        if found:
            return found.group("name")
    return name


@dataclass(frozen=True)
class ServiceMap:
    """Pod name or glob pattern -> service, overriding `service_of`."""

    exact: dict[str, str] = field(default_factory=dict)
    patterns: list[tuple[str, str]] = field(default_factory=list)

    def service(self, pod: str) -> str:
        name = pod.strip()
        if name in self.exact:
            return self.exact[name]
        for pattern, service in self.patterns:
            if fnmatchcase(name, pattern):
                return service
        return service_of(name)

    @classmethod
    def read(cls, path: str | Path) -> ServiceMap:
        """A JSON object ``{"pod or pattern": "service"}`` or a CSV with a header ``pod,service``
        (the first column may also be called pattern, instance or name)."""
        label = str(path)
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(label, "service map not found (expected a CSV pod,service or a JSON object)")
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(label, f"cannot read the service map: {exc}") from None
        pairs = _json_pairs(label, text) if file.suffix.lower() == ".json" else _csv_pairs(label, text)
        exact: dict[str, str] = {}
        patterns: list[tuple[str, str]] = []
        for key, service in pairs:
            if any(c in key for c in _GLOB_CHARS):
                patterns.append((key, service))
            else:
                exact[key] = service
        return cls(exact, patterns)


def _json_pairs(label: str, text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(label, f"not valid JSON ({exc}); expected an object {{\"pod or pattern\": \"service\"}}") from None
    if not isinstance(data, dict):
        raise InputError(label, "expected a JSON object {\"pod or pattern\": \"service\"}")
    pairs = []
    for key, service in data.items():
        if not isinstance(service, str) or not service.strip() or not key.strip():
            raise InputError(label, f"entry {key!r}: expected a non-empty service name, found {service!r}")
        pairs.append((key.strip(), service.strip()))
    return pairs


def _csv_pairs(label: str, text: str) -> list[tuple[str, str]]:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise InputError(label, "the service map is empty; expected a header pod,service and one row per pod or pattern")
    header = [h.strip().lower() for h in rows[0]]
    if len(header) != 2 or header[0] not in _KEY_COLUMNS or header[1] != "service":
        raise InputError(label, f"expected the header pod,service (or pattern,service); found {','.join(rows[0])!r}")
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(label, f"line {line}: expected two non-empty values (pod or pattern, service), found {row!r}")
        pairs.append((row[0].strip(), row[1].strip()))
    return pairs
