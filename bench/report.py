"""Render docs/benchmarks.md from bench/results/*.json (placeholder while developing)."""

from pathlib import Path


def render_docs() -> Path:
    """Placeholder."""
    return Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
