"""Deterministic tools of the incident responder: loading, sandboxed SQL, log scanning, detection."""
