"""Early warnings: threshold rules over sales metrics, alert states with history, notifications.

Laid out as Prometheus and Alertmanager are, and importing nothing above ``engine/``: the metric
catalogue and the metric frames come from the caller.

- :mod:`~engine.alerting.catalogue`: what the core knows of metrics (a catalogue handed in as
  plain data, the metric frames as a function, the frame's columns).
- :mod:`~engine.alerting.rules`: rule files (rules, receivers, route, inhibit rules), checked.
- :mod:`~engine.alerting.state`: the alert state machine (``for``, ``keep_firing_for``).
- :mod:`~engine.alerting.mute`: the ``Silencer`` and the ``Inhibitor``, one ``Muter`` each.
- :mod:`~engine.alerting.route`: routing and grouping into notifications.
- :mod:`~engine.alerting.evaluate`: the evaluation of a rule file at an as_of.
- :mod:`~engine.alerting.ruletest`: rule unit tests (``promtool test rules``).
- :mod:`~engine.alerting.store`: state, history, silences and the outbox in SQL.
- :mod:`~engine.alerting.notify`: delivery of the outbox (webhooks, files), with retries.

The ``quotacast warnings`` commands wire them to the warning metrics of ``features``.
"""

from __future__ import annotations

__all__: list[str] = []
