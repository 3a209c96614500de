"""Fingerprint sensors, bottom to top.

:mod:`.types` (guidance, captures, status, errors) and :mod:`.parameters`
(tuned constants) import nothing from the package; :mod:`.grow_codec` is the
pure Grow packet codec; :mod:`.reconnecting` reopens a lost device;
:mod:`.grow` (UART modules) and :mod:`.usb` (USB area sensors) are the
drivers; :mod:`.service` is what the station sees (``open_sensor``).
"""
