"""Evaluation harness and synthetic incident scenario generator for incident-graph."""
