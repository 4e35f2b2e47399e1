"""The bgmode client: submit background responses, follow them, never lose an id."""

from __future__ import annotations
