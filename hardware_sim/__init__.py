"""Device-side peers of the kiosk's hardware, speaking the real byte protocols.

The simulators reuse the production codecs over real ptys (serial devices) or
a pyusb backend (USB devices), with named fault scenarios. ``kesp-sim`` starts
them; ``kesp-sim day`` runs a whole simulated polling-station day.
"""
