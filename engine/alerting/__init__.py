"""Early warnings: threshold rules over sales metrics, alert states with history, notifications.

Modules: :mod:`~engine.alerting.rules` (rule files), :mod:`~features.metrics` (the
metric catalogue), :mod:`~engine.alerting.engine` (evaluation), :mod:`~engine.alerting.store`
(state, history, silences, outbox in SQL), :mod:`~engine.alerting.notify` (delivery),
:mod:`~service.cli.warnings` (the ``quotacast warnings`` commands).
"""

from __future__ import annotations

__all__: list[str] = []
