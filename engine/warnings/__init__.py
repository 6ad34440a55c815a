"""Early warnings: threshold rules over sales metrics, alert states with history, notifications.

Modules: :mod:`~engine.warnings.rules` (rule files), :mod:`~engine.warnings.metrics` (the
metric catalogue), :mod:`~engine.warnings.engine` (evaluation), :mod:`~engine.warnings.store`
(state, history, silences, outbox in SQL), :mod:`~engine.warnings.notify` (delivery),
:mod:`~engine.warnings.cli` (the ``quotacast warnings`` commands).
"""

from __future__ import annotations

__all__: list[str] = []
