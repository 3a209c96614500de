"""Process glue: the ``kesp-agent`` command (:mod:`~agent.runtime.cli`), the
service wiring (:mod:`~agent.runtime.service`), site configuration, device keys,
systemd notification, the control socket, Numba set-up and SQLite durability.
"""
