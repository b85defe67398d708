"""Alerts, silences, policy actions and the audit log, for the API, the CLI and the agent."""

from __future__ import annotations

from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import (
    ActionView,
    AlertDetail,
    AlertEvent,
    AlertView,
    AuditEntry,
    NewSilence,
    RuleView,
    SilenceView,
)
from gpuwarden.state.audit import AuditLog
from gpuwarden.watchdog.actions import Policies
from gpuwarden.watchdog.alerts import AlertBook
from gpuwarden.watchdog.rules import parse_duration


def _book(cp: ControlPlane) -> AlertBook:
    return cp.watchdog.alerts if cp.watchdog else AlertBook(cp.db)


def _policies(cp: ControlPlane) -> Policies:
    if cp.watchdog is not None:
        return cp.watchdog.policies
    return Policies(cp.db, cp.config.watchdog.policies, AlertBook(cp.db), AuditLog(cp.db))


def _view(a, model: type = AlertView):  # -> model: a watchdog record as its API shape
    return model(**{f: getattr(a, f) for f in model.model_fields})


def list_alerts(cp: ControlPlane, state: str | None = None, limit: int = 200) -> list[AlertView]:
    return [_view(a) for a in _book(cp).list(state=state, limit=limit)]


def get_alert(cp: ControlPlane, alert_id: int) -> AlertDetail:
    book = _book(cp)
    alert = book.get(alert_id)
    return AlertDetail(**_view(alert).model_dump(),
                       events=[AlertEvent(**{k: e[k] for k in ("at", "event", "actor")})
                               for e in book.events(alert_id)])


def acknowledge(cp: ControlPlane, alert_id: int, who: str) -> AlertView:
    return _view(_book(cp).acknowledge(alert_id, who))


def list_silences(cp: ControlPlane, include_expired: bool = False) -> list[SilenceView]:
    return [_view(s, SilenceView) for s in _book(cp).silences(include_expired=include_expired)]


def add_silence(cp: ControlPlane, body: NewSilence, who: str) -> SilenceView:
    try:
        duration = parse_duration(body.duration)
    except ValueError as exc:
        raise GpuwardenError(f"duration: {exc}") from None
    known = {r.id for r in rules(cp)}
    if body.rule and body.rule not in known:
        raise NotFoundError(f"rule: {body.rule!r} is not a rule; rules are: "
                             f"{', '.join(sorted(known))}")
    s = _book(cp).silence(author=who, duration=duration, rule=body.rule or None,
                          subject=body.subject, comment=body.comment)
    AuditLog(cp.db).write(who, "silence", f"{s.rule or '*'}:{s.subject}", "created",
                          silence_id=s.id, expires_at=s.expires_at, comment=s.comment)
    return _view(s, SilenceView)


def expire_silence(cp: ControlPlane, silence_id: int, who: str) -> None:
    _book(cp).expire_silence(silence_id, who)
    AuditLog(cp.db).write(who, "silence", str(silence_id), "expired")


def list_actions(cp: ControlPlane, state: str | None = None) -> list[ActionView]:
    return [_view(a, ActionView) for a in _policies(cp).list(state)]


def decide_action(cp: ControlPlane, action_id: int, who: str, approve: bool) -> ActionView:
    return _view(_policies(cp).decide(action_id, who, approve), ActionView)


def audit_log(cp: ControlPlane, limit: int = 200) -> list[AuditEntry]:
    return [AuditEntry(**e) for e in AuditLog(cp.db).list(limit)]


def rules(cp: ControlPlane) -> list[RuleView]:
    from gpuwarden.watchdog.rules import load_rules

    specs = cp.watchdog.rules if cp.watchdog else load_rules(cp.config.watchdog.rules)
    return [RuleView(id=r.id, kind=r.kind, enabled=r.enabled, severity=r.severity,
                     for_seconds=r.for_, summary=r.summary) for r in specs]
