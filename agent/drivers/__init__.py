"""Device drivers: fingerprint sensors, receipt printer, ID-document reader.

Each device is layered transport -> frame codec -> device API -> service.
The station application only sees the services and the closed status types.
"""
