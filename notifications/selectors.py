"""Reads for the notification settings page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from notifications.kinds import BUYER, CREATOR, KINDS
from notifications.models import Notification, NotificationKind, NotificationOptOut


@dataclass(frozen=True, slots=True)
class KindChoice:
    kind: str
    label: str
    help: str
    optional: bool
    enabled: bool


@dataclass(frozen=True, slots=True)
class KindGroup:
    title: str
    kinds: list[KindChoice]


def notification_preferences_get(*, user: Any, is_creator: bool) -> list[KindGroup]:
    """Every kind this person can receive, grouped (as a buyer; as a creator), with whether it
    is on. One query."""
    off = set(NotificationOptOut.objects.filter(user=user).values_list("kind", flat=True))
    groups = [(BUYER, "As a buyer")]
    if is_creator:
        groups.append((CREATOR, "As a creator"))
    out = []
    for audience, title in groups:
        choices = [
            KindChoice(
                kind=kind,
                label=NotificationKind(kind).label,
                help=spec.help,
                optional=spec.optional,
                enabled=not (spec.optional and kind in off),
            )
            for kind, spec in KINDS.items()
            if spec.audience == audience
        ]
        # Optional ones first: they are what the page is for.
        choices.sort(key=lambda c: not c.optional)
        out.append(KindGroup(title=title, kinds=choices))
    return out


def notifications_recent_for(*, user: Any, limit: int = 10) -> QuerySet[Notification]:
    return Notification.objects.filter(recipient=user).order_by("-created_at")[:limit]
