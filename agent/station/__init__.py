"""The polling station: a voter's turn and the rules the commission relies on.

:mod:`~agent.station.station` (the :class:`Station` and a voter's turn),
:mod:`~agent.station.operator` (the operator's commands),
:mod:`~agent.station.slips` (what is printed), :mod:`~agent.station.lifecycle`
(opened, paused, closed, exported), :mod:`~agent.station.ledger` (slip serials
and their print state), :mod:`~agent.station.marks` (who has been identified,
merged with the peer kiosks), :mod:`~agent.station.journal` (audit + telemetry)
and :mod:`~agent.station.parameters` (tuned timings and limits).
"""
