"""The voter roll: the signed, encrypted package from the CEC
(:mod:`~agent.roll.package`) and the roll installed on this kiosk with its
gallery cache (:mod:`~agent.roll.installed`).
"""
