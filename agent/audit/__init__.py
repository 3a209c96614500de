"""The audit trail: the hash-chained log (:mod:`~agent.audit.log`), its verifier
(:mod:`~agent.audit.verify`), the ``kesp-agent audit`` command
(:mod:`~agent.audit.cli`) and the event catalogue (``events.toml``,
:mod:`~agent.audit.events`, the generated :mod:`~agent.audit.event_ids`).
"""
