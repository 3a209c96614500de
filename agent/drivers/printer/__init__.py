"""The ESC/POS receipt printer, bottom to top.

:mod:`.errors`, :mod:`.profiles` (what each model can do, tuned constants) and
:mod:`.document` (the slip as data) import nothing from the package above them;
:mod:`.status` maps ``DLE EOT`` bytes to the closed
:class:`~agent.drivers.printer.status.PrinterStatus` and holds the print
outcomes; :mod:`.escpos` is the pure frame codec, :mod:`.render` (text),
:mod:`.qr` and :mod:`.encoder` (a whole document) build on it;
:mod:`.printer` is the service the station calls. The byte links (serial, USB)
are in :mod:`agent.drivers.transport`.
"""
