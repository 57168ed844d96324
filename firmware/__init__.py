# firmware — the three-phase smart power meter.
VERSION = "0.1.0"
